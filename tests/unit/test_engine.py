"""The playout engine's mixing, sample for sample, on the clocked WAV sink: a voice on air
at a steady gain takes the short path (agent.playout.reading.SteadyReader), scaled up to
STEADY_AHEAD_S ahead when its source can be peeked at. Its samples must be the general
path's, and every frame must air once and in order, across the period in which its source
runs out, a gain change and a cue that cuts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.playout.engine import FADE_IN_S, FADE_OUT_S, MIN_SLEEP_S, PlayoutEngine
from agent.playout.sources import BufferSource
from agent.playout.voice import (
    BYTES_PER_FRAME,
    EngineEvent,
    PcmSource,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from agent.recording.tap import RecordingTap
from drivers.audio.wav import ClockedWavSink
from tests.support.agentproc import wait_for
from tests.support.wavfile import read_capture

RATE = 48_000
PERIOD_S = 0.010
PERIOD = round(RATE * PERIOD_S)
FADE_IN = round(RATE * FADE_IN_S)
FADE_OUT = round(RATE * FADE_OUT_S)
GAIN = 0.7
NEW_GAIN = 0.4
# The card underran (a late writer, its gap padded with silence) in this many runs at most:
# under a parallel suite, other processes' real-time audio threads can hold both CPUs
# longer than the card's 25 ms. Such a run says nothing about the arithmetic.
ATTEMPTS = 3
DEEP_S = 0.200  # the card's lead while a voice plays steady, in the tests that keep one
DEEP_HELD_S = 0.150  # what it holds, at least, when the cue comes

Pcm = npt.NDArray[np.int16]
# Done to the engine while the voice plays with PCM scaled ahead and not yet aired.
Action = Callable[[PlayoutEngine, Voice], None]


@dataclass
class Run:
    events: list[EngineEvent]
    voice: Voice
    aired: Pcm  # the capture from the voice's first frame on
    start: int  # the voice's first frame in the capture


class Unpeekable:
    """PCM in memory, without BufferSource.peek: scaled a period at a time."""

    def __init__(self, pcm: bytes) -> None:
        self._buffer = BufferSource(pcm)

    def read(self, max_bytes: int) -> bytes:
        return self._buffer.read(max_bytes)

    @property
    def finished(self) -> bool:
        return self._buffer.finished


@pytest.mark.parametrize("peekable", [False, True])
def test_a_steady_voice_is_its_samples_times_its_gain_truncated(tmp_path: Path,
                                                                 peekable: bool) -> None:
    frames = RATE // 2 + 7  # the source runs out 7 frames into a period
    pcm = noise(frames)
    run = play_clean(tmp_path, pcm, peekable)
    [started, finished] = run.events
    assert isinstance(started, VoiceStarted) and isinstance(finished, VoiceEnded)
    assert finished.frame == started.frame + frames and not finished.cut
    assert run.voice.frames_played == frames and run.voice.underrun_frames == 0

    aired, expected = run.aired[:frames], scaled(pcm, GAIN)
    assert np.array_equal(aired[FADE_IN:], expected[FADE_IN:])
    assert np.all(np.abs(aired[:FADE_IN].astype(int)) <= np.abs(expected[:FADE_IN].astype(int)))


@pytest.mark.parametrize("deep_s", [None, DEEP_S], ids=["shallow", "deep"])
def test_a_gain_change_drops_what_was_scaled_ahead(tmp_path: Path,
                                                   deep_s: float | None) -> None:
    """Every frame airs once, in order: at the old gain, ramped over one period, at the new
    one; none of what was scaled ahead at the old gain airs after the change, nor, in a
    deep card, what the card held beyond its shallow lead."""
    frames = 2 * RATE  # long past the moment the change is made, should the test be slow
    pcm = noise(frames)
    changed_before: list[int] = []

    def change_gain(engine: PlayoutEngine, voice: Voice) -> None:
        changed_before.append(engine.output.next_frame_index())
        engine.set_gain(voice, NEW_GAIN)
    run = play_clean(tmp_path, pcm, True, change_gain, deep_s)
    assert run.voice.frames_played == frames
    aired = run.aired[:frames]
    old, new = scaled(pcm, GAIN), scaled(pcm, NEW_GAIN)
    change = FADE_IN + int(np.flatnonzero(np.any(aired[FADE_IN:] != old[FADE_IN:], axis=1))[0])
    assert change < frames - PERIOD, "the new gain never aired"
    if deep_s is not None:  # heard before the end of what the card held: taken back
        assert run.start + change < changed_before[-1]
    ramp_end = change + PERIOD
    assert np.array_equal(aired[ramp_end:], new[ramp_end:])
    ramp = np.abs(aired[change:ramp_end].astype(int))
    assert np.all(ramp <= np.abs(old[change:ramp_end].astype(int)) + 1)
    assert np.all(ramp >= np.abs(new[change:ramp_end].astype(int)) - 1)


@pytest.mark.parametrize("deep_s", [None, DEEP_S], ids=["shallow", "deep"])
def test_a_cue_fades_out_the_frames_after_the_last_aired(tmp_path: Path,
                                                         deep_s: float | None) -> None:
    """A voice cued mid-period cuts the one on air while it is scaled ahead (and, in a deep
    card, while the card holds much of it): it fades out from the frame after the last
    one aired, none skipped."""
    pcm = noise(2 * RATE)  # long past the cue, should the test be slow
    cued_before: list[int] = []

    def cue_silence(engine: PlayoutEngine, voice: Voice) -> None:
        assert voice.first_frame is not None
        cued_before.append(engine.output.next_frame_index())
        at = engine.output.playhead() + PERIOD + 7  # inside what is ahead
        engine.play([Voice("silence", BufferSource(bytes(RATE // 4 * BYTES_PER_FRAME)), GAIN)],
                    at_frame=at)
    run = play_clean(tmp_path, pcm, True, cue_silence, deep_s)
    cut = next(e.frame for e in run.events
               if isinstance(e, VoiceStarted) and e.voice is not run.voice)
    [end] = [e for e in run.events if isinstance(e, VoiceEnded) and e.voice is run.voice]
    assert end.cut and end.frame == cut + FADE_OUT
    if deep_s is not None:  # heard before the end of what the card held: taken back
        assert cut < cued_before[-1]
    played = cut - run.start
    assert run.voice.frames_played == played

    expected = scaled(pcm, GAIN)
    assert np.array_equal(run.aired[FADE_IN:played], expected[FADE_IN:played])
    ramp = 1.0 - (np.arange(FADE_OUT, dtype=np.float32) + 1) / FADE_OUT
    faded = pcm[played:played + FADE_OUT].astype(np.float32) * (ramp * GAIN)[:, None]
    assert np.array_equal(run.aired[played:played + FADE_OUT], faded.astype("<i2"))


class StallingSource(Unpeekable):
    """PCM in memory whose next read holds the engine's thread for ``stall_s`` (set at any
    time): the card runs dry while that period is rendered."""

    def __init__(self, pcm: bytes, stall_s: float = 0.0) -> None:
        super().__init__(pcm)
        self.stall_s = stall_s

    def read(self, max_bytes: int) -> bytes:
        stall_s, self.stall_s = self.stall_s, 0.0
        time.sleep(stall_s)
        return super().read(max_bytes)


def test_a_voice_whose_period_reached_the_card_late_is_reported_where_it_aired(
        tmp_path: Path) -> None:
    """The card runs dry while the period that starts a voice is rendered (its first read
    stalls): the voice's start and end are told at the frames it aired on, not those the
    period was rendered for."""
    frames = RATE // 10
    run, underrun = play(tmp_path / "out.wav", StallingSource(noise(frames).tobytes(), 0.1),
                         None)
    assert underrun >= RATE // 20  # 100 ms stalled, against the card's 25
    [started, finished] = run.events
    assert isinstance(started, VoiceStarted) and isinstance(finished, VoiceEnded)
    assert started.frame == run.start and finished.frame == started.frame + frames
    capture = read_capture(tmp_path / "out.wav")
    assert capture.first_non_silent(threshold=1) == started.frame
    assert not capture.samples[finished.frame:].any() and capture.samples[finished.frame - 1].any()


def test_a_voice_cut_while_the_card_ran_dry_is_reported_ended_where_its_fade_aired(
        tmp_path: Path) -> None:
    """Its fade is rendered in the period after the cut, which reaches the card late: the
    end is told where the fade ended on the card."""
    source = StallingSource(noise(2 * RATE).tobytes())

    def cut_during_a_stall(engine: PlayoutEngine, voice: Voice) -> None:
        source.stall_s = 0.1
        engine.cancel(voice)
    run, underrun = play(tmp_path / "out.wav", source, cut_during_a_stall)
    [_, finished] = run.events
    assert isinstance(finished, VoiceEnded) and finished.cut
    capture = read_capture(tmp_path / "out.wav")
    assert not capture.samples[finished.frame:].any()
    assert capture.samples[finished.frame - FADE_OUT:finished.frame - FADE_OUT // 2].any()
    assert underrun >= RATE // 20  # 100 ms stalled, against the card's 25


def noise(frames: int) -> Pcm:
    return np.random.default_rng(7).integers(-32768, 32767, (frames, 2)).astype("<i2")


def scaled(pcm: Pcm, gain: float) -> Pcm:
    """The general path's arithmetic: float32 samples times the float32 gain, truncated."""
    result: Pcm = (pcm.astype(np.float32) * np.float32(gain)).astype("<i2")
    return result


def play_clean(tmp_path: Path, pcm: Pcm, peekable: bool, during: Action | None = None,
               deep_s: float | None = None) -> Run:
    """``play``, again while the card underran, ATTEMPTS times at most."""
    underruns = []
    for attempt in range(ATTEMPTS):
        source = BufferSource(pcm.tobytes()) if peekable else Unpeekable(pcm.tobytes())
        run, underrun = play(tmp_path / f"out-{attempt}.wav", source, during, deep_s)
        underruns.append(underrun)
        if underrun == 0:
            return run
    raise AssertionError(f"the card underran in every run: {underruns} frames")


def play(capture: Path, source: PcmSource, during: Action | None,
         deep_s: float | None = None) -> tuple[Run, int]:
    """``source`` played once at GAIN into a clocked WAV sink at ``capture``, ``during``
    done 0.2 s in, at a moment the engine holds three periods or more scaled ahead (of a
    source it can peek at) and, with ``deep_s``, the card holds DEEP_HELD_S or more: the
    run, and the frames the card underran."""
    events: list[EngineEvent] = []
    ended = threading.Event()
    voice = Voice("noise", source, GAIN)

    def on_event(event: EngineEvent) -> None:
        events.append(event)
        if isinstance(event, VoiceEnded) and event.voice is voice:
            ended.set()
    sink = ClockedWavSink(capture, RATE)
    engine = PlayoutEngine(sink, on_event, buffer_s=0.025, period_s=PERIOD_S,
                           deep_buffer_s=deep_s)
    engine.start()
    try:
        # Played once the card has taken silence: a card not yet written to pads without
        # counting an underrun (as ALSA's starts with the first write), so a first write
        # held up under a parallel suite would land later than the frame its voice was
        # started on, and nothing would tell (a fresh clone found the end 487 frames late).
        wait_for(lambda: sink.buffered_frames() > 0, 5, interval=0.001,
                 what="a first period of silence")
        engine.play([voice])
        if during is not None:
            held = 3 * PERIOD * BYTES_PER_FRAME
            wait_for(lambda: voice.frames_played >= RATE // 5
                     and (voice.peekable is None or len(voice.ahead) - voice.ahead_at >= held),
                     10, interval=0.001, what="three periods scaled ahead")
            if deep_s is not None:
                wait_for(lambda: sink.buffered_frames() >= DEEP_HELD_S * RATE, 10,
                         interval=0.001, what="a deep card")
            during(engine, voice)
        assert ended.wait(10)
        # Its last frame is rendered ahead of the card: stop once the card played it.
        end = next(e.frame for e in events if isinstance(e, VoiceEnded) and e.voice is voice)
        wait_for(lambda: sink.next_frame_index() - sink.buffered_frames() >= end, 10,
                 what="the card past the voice's end")
        underrun = sink.underrun_frames
    finally:
        engine.stop()
    assert voice.first_frame is not None
    samples = read_capture(capture).samples
    return Run(events, voice, samples[voice.first_frame:], voice.first_frame), underrun


def test_a_relay_plays_in_its_shorter_periods(tmp_path: Path) -> None:
    """A voice whose source cannot be peeked at (a relay, fed as it arrives) is written to
    the card in the relay period; one that can, and the silence, in the full period."""
    period, relay_period = round(RATE * 0.015), round(RATE * 0.010)
    writes: list[tuple[int, int]] = []  # (first frame, frames) of each write the card took
    ended = threading.Event()

    def on_event(event: EngineEvent) -> None:
        if isinstance(event, VoiceEnded) and not event.cut:
            ended.set()
    card = RecordingTap(ClockedWavSink(tmp_path / "card.wav", RATE),
                        lambda index, frames: writes.append((index, len(frames) // 4)))
    engine = PlayoutEngine(card, on_event, buffer_s=0.023, period_s=0.015,
                           relay_period_s=0.010)
    engine.start()
    try:
        wait_for(lambda: writes, 5, interval=0.005, what="a first period of silence")
        relay = Voice("relay", Unpeekable(noise(RATE // 5).tobytes()), GAIN)
        engine.play([relay])
        assert ended.wait(5)
        ended.clear()
        track = Voice("track", BufferSource(noise(RATE // 5).tobytes()), GAIN)
        engine.play([track])
        assert ended.wait(5)
    finally:
        engine.stop()
    assert relay.first_frame is not None and relay.end_frame is not None
    assert track.first_frame is not None and track.end_frame is not None

    def sizes(start: int, end: int) -> set[int]:
        """Sizes of the writes wholly within [start, end)."""
        return {n for first, n in writes if start <= first and first + n <= end}
    assert sizes(relay.first_frame, relay.end_frame) == {relay_period}
    assert sizes(track.first_frame, track.end_frame) == {period}
    assert sizes(0, relay.first_frame) == {period}  # silence before anything played


class GivesNothingBack(ClockedWavSink):
    """A card that says it can rewind, then gives nothing back (as an ALSA plugin that
    answers snd_pcm_rewindable with 0)."""

    def rewindable(self) -> int:
        return 0


def test_a_card_that_gives_nothing_back_is_kept_shallow(tmp_path: Path) -> None:
    card = GivesNothingBack(tmp_path / "card.wav", RATE)
    engine = PlayoutEngine(card, lambda _event: None, buffer_s=0.025, period_s=PERIOD_S,
                           deep_buffer_s=DEEP_S)
    engine.start()
    try:
        voice = Voice("noise", BufferSource(noise(5 * RATE).tobytes()), GAIN)
        engine.play([voice])
        wait_for(lambda: card.buffered_frames() >= DEEP_HELD_S * RATE, 10, interval=0.001,
                 what="a deep card")
        engine.set_gain(voice, NEW_GAIN)
        # What it holds drains to the shallow lead, the MIN_SLEEP_S the engine may render
        # early, and the period it writes then; the DAC's tick lag is within the period
        # (agent.playout.aired.frames_ahead).
        shallow = round((0.025 + MIN_SLEEP_S + PERIOD_S) * RATE)
        wait_for(lambda: card.buffered_frames() <= shallow, 5, interval=0.001,
                 what="a shallow card")
        engine.set_gain(voice, GAIN)  # and stays so
        time.sleep(0.3)
        assert card.buffered_frames() <= shallow
    finally:
        engine.stop()
