"""The playout engine's mixing, sample for sample, on the clocked WAV sink: a voice on air
at a steady gain takes the short path (agent.playout.engine._render_steady), whose samples
must be the general path's, up to and across the period in which its source runs out."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from agent.playout.engine import FADE_IN_S, PlayoutEngine
from agent.playout.sources import BufferSource
from agent.playout.voice import EngineEvent, Voice, VoiceEnded, VoiceStarted
from drivers.audio.wav import ClockedWavSink
from tests.support.agentproc import wait_for
from tests.support.wavfile import read_capture

RATE = 48_000
PERIOD_S = 0.010
GAIN = 0.7


# The card underran (a late writer, its gap padded with silence) in this many runs at most:
# under a parallel suite, other processes' real-time audio threads can hold both CPUs
# longer than the card's 25 ms. Such a run says nothing about the arithmetic.
ATTEMPTS = 3


def test_a_steady_voice_is_its_samples_times_its_gain_truncated(tmp_path: Path) -> None:
    frames = RATE // 2 + 7  # the source runs out 7 frames into a period
    pcm = np.random.default_rng(7).integers(-32768, 32767, (frames, 2)).astype("<i2")
    underruns = []
    for attempt in range(ATTEMPTS):
        capture = tmp_path / f"out-{attempt}.wav"
        events, voice, underrun = play(capture, pcm)
        underruns.append(underrun)
        if underrun == 0:
            break
    assert underruns[-1] == 0, f"the card underran in every run: {underruns} frames"
    [started, finished] = events
    assert isinstance(started, VoiceStarted) and isinstance(finished, VoiceEnded)
    assert finished.frame == started.frame + frames and not finished.cut
    assert voice.frames_played == frames and voice.underrun_frames == 0

    aired = read_capture(capture).samples[started.frame:finished.frame]
    # The general path's arithmetic: float32 samples times the float32 gain, truncated.
    expected = (pcm.astype(np.float32) * np.float32(GAIN)).astype("<i2")
    fade_in = round(RATE * FADE_IN_S)
    assert np.array_equal(aired[fade_in:], expected[fade_in:])
    assert np.all(np.abs(aired[:fade_in].astype(int)) <= np.abs(expected[:fade_in].astype(int)))


def play(capture: Path, pcm: np.ndarray) -> tuple[list[EngineEvent], Voice, int]:
    """``pcm`` played once at GAIN into a clocked WAV sink at ``capture``: the engine's
    events, the voice, and the frames the card underran."""
    events: list[EngineEvent] = []
    ended = threading.Event()

    def on_event(event: EngineEvent) -> None:
        events.append(event)
        if isinstance(event, VoiceEnded):
            ended.set()
    sink = ClockedWavSink(capture, RATE)
    engine = PlayoutEngine(sink, on_event, buffer_s=0.025, period_s=PERIOD_S)
    engine.start()
    try:
        voice = Voice("noise", BufferSource(pcm.tobytes()), GAIN)
        engine.play([voice])
        assert ended.wait(10)
        # Its last frame is rendered ahead of the card: stop once the card played it.
        end = next(e.frame for e in events if isinstance(e, VoiceEnded))
        wait_for(lambda: sink.next_frame_index() - sink.buffered_frames() >= end, 10,
                 what="the card past the voice's end")
        underrun = sink.underrun_frames
    finally:
        engine.stop()
    return events, voice, underrun
