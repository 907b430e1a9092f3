"""The clocked WAV sink (hil.md) and the capture reader of tests/support/wavfile.py."""

from __future__ import annotations

import json
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.core.clock import ManualClock
from drivers.audio import open_output
from drivers.audio.alsa import AlsaOutput
from drivers.audio.base import AudioOutputError
from drivers.audio.wav import CAPACITY_S, ClockedWavSink
from tests.support.agentproc import wait_for
from tests.support.wavfile import max_step, read_capture, rms_dbfs, tone_frequency

RATE = 48_000


def frames_of(samples: np.ndarray) -> bytes:
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


def tone(frequency: float, frames: int, amplitude: int = 8000) -> np.ndarray:
    wave_ = (amplitude * np.sin(2 * np.pi * frequency * np.arange(frames) / RATE)).astype(np.int16)
    return np.column_stack([wave_, wave_])


@pytest.fixture
def manual_sink(tmp_path: Path) -> Iterator[tuple[ClockedWavSink, ManualClock]]:
    clock = ManualClock()
    sink = ClockedWavSink(tmp_path / "out.wav", RATE, clock, tick_s=0.001)
    sink.open()
    yield sink, clock
    sink.close()


def consumed_through(sink: ClockedWavSink, frames: int) -> bool:
    return sink.next_frame_index() >= frames and sink.buffered_frames() == 0


def wave_frames(path: Path) -> int:
    with wave.open(str(path)) as reader:
        return int(reader.getnframes())


def file_frames(path: Path) -> int:
    return read_capture(path).frames


def test_sidecar_is_exact_and_frame_zero_is_start_epoch(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    sidecar = json.loads(sink.sidecar_path.read_text())
    assert sidecar == {"start_epoch": clock.now(), "rate": RATE, "channels": 2, "format": "s16le"}
    assert sink.frame_time(0) == clock.now()
    assert sink.frame_time(RATE * 3) == clock.now() + 3.0
    assert sink.sidecar_path.name == "out.wav.json"


def test_silence_when_nothing_is_written_and_no_underrun_before_the_first_write(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    clock.advance(0.25)
    wait_for(lambda: file_frames(sink.path) >= RATE // 4, 5, what="a quarter second consumed")
    capture = read_capture(sink.path)
    assert not capture.samples.any()
    assert capture.first_non_silent(threshold=1) is None
    assert sink.underrun_frames == 0  # an ALSA card, too, starts with the first write


def test_a_click_lands_at_the_planned_index(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    clock.advance(0.1)
    wait_for(lambda: consumed_through(sink, RATE // 10), 5, what="DAC caught up")
    start = sink.next_frame_index()
    planned = start + 700
    burst = np.zeros((planned - start + 1, 2), dtype=np.int16)
    burst[-1] = (20_000, -20_000)
    sink.write(frames_of(burst[:1000]), timeout=1)
    assert sink.next_frame_index() == planned + 1
    clock.advance(0.05)
    wait_for(lambda: file_frames(sink.path) > planned, 5, what="click consumed")
    capture = read_capture(sink.path)
    assert capture.first_non_silent(threshold=1) == planned
    assert tuple(capture.samples[planned]) == (20_000, -20_000)
    assert capture.time_of(planned) == sink.frame_time(planned)
    assert capture.index_at(sink.frame_time(planned)) == planned
    assert capture.first_non_silent(after_epoch=sink.frame_time(planned + 1)) is None


def test_underrun_pads_silence_and_numbering_moves_on(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    first = sink.next_frame_index()
    assert sink.write(frames_of(tone(1000, 480)), timeout=1) == first
    planned = sink.next_frame_index()  # the writer's next period is for this frame...
    clock.advance(0.2)  # ...and it is written 190 ms late
    wait_for(lambda: consumed_through(sink, first + RATE // 5), 5, what="DAC caught up")
    resumed = sink.next_frame_index()
    assert resumed >= first + RATE // 5
    assert sink.write(frames_of(tone(1000, 480)), timeout=1) == resumed > planned
    clock.advance(0.05)
    wait_for(lambda: file_frames(sink.path) >= resumed + 480, 5, what="second burst consumed")
    capture = read_capture(sink.path)
    assert capture.samples[first:first + 480].any()
    assert not capture.samples[first + 480:resumed].any()
    assert np.array_equal(capture.samples[resumed:resumed + 480], tone(1000, 480))
    # Both gaps after the first write are underruns: the 190 ms and what followed the
    # second burst in the last 50 ms.
    assert sink.underrun_frames == (resumed - first - 480) + (RATE // 20 - 480)


def test_underruns_are_listed_beside_the_capture_and_taken_out_as_written(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    clock.advance(0.01)  # the opening silence, before the first write: no underrun
    wait_for(lambda: sink.next_frame_index() >= 480, 5, what="opening silence")
    first = sink.next_frame_index()
    sink.write(frames_of(tone(1000, 960)), timeout=1)
    clock.advance(0.06)  # 40 ms late, padded a tick at a time
    wait_for(lambda: consumed_through(sink, first + 2880), 5, what="DAC caught up")
    resumed = sink.next_frame_index()
    sink.write(frames_of(tone(1000, 960)), timeout=1)
    clock.advance(0.02)
    wait_for(lambda: file_frames(sink.path) >= resumed + 960, 5, what="second burst consumed")
    capture = read_capture(sink.path)
    assert capture.underruns[0] == (first + 960, resumed - first - 960)
    assert sum(frames for _, frames in capture.underruns) == sink.underrun_frames

    written = capture.as_written()
    assert np.array_equal(written.segment(capture.time_of(first), 0.04),
                          np.vstack([tone(1000, 960), tone(1000, 960)]))
    for card_index in (0, first, first + 959, resumed, resumed + 10):
        at = capture.time_of(card_index)
        assert written.time_of(written.index_at(at)) == pytest.approx(at)
    assert written.index_at(capture.time_of(first + 1000)) == first + 960  # in the span: after
    assert capture.as_written(max_stall_s=0.01) is capture  # 40 ms: longer, kept


def test_write_blocks_while_full_then_times_out(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, _clock = manual_sink
    with pytest.raises(AudioOutputError, match="buffer still full"):
        sink.write(bytes(4 * RATE // 2), timeout=0.05)
    assert sink.buffered_frames() == round(CAPACITY_S * RATE)


def test_rewind_takes_back_what_was_not_yet_played_all_or_nothing(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    """What the clock has not consumed can be taken back; the next write gets the index
    the first frame taken back had, and the capture holds the frames written after."""
    sink, clock = manual_sink
    first = sink.write(tone(1000, 480).tobytes() + tone(500, 960).tobytes(), timeout=1.0)
    assert sink.rewindable() == 1440
    assert not sink.rewind(1441) and sink.next_frame_index() == first + 1440
    assert sink.rewind(960) and sink.next_frame_index() == first + 480
    assert sink.write(tone(2000, 960).tobytes(), timeout=1.0) == first + 480
    clock.advance(0.1)
    wait_for(lambda: sink.buffered_frames() == 0, 5, interval=0.001, what="played out")
    assert sink.rewindable() == 0 and not sink.rewind(1)
    sink.close()
    samples = read_capture(sink.path).samples
    assert np.array_equal(samples[first:first + 1440],
                          np.vstack([tone(1000, 480), tone(2000, 960)]))


def test_write_rejects_partial_frames_and_closed_sink(tmp_path: Path) -> None:
    sink = ClockedWavSink(tmp_path / "out.wav", RATE, ManualClock())
    with pytest.raises(AudioOutputError, match="not open"):
        sink.frame_time(0)
    sink.open()
    with pytest.raises(ValueError, match="whole number"):
        sink.write(b"\x00\x01\x02", timeout=1)
    sink.close()
    with pytest.raises(AudioOutputError, match="closed"):
        sink.write(bytes(4), timeout=1)


def test_factory_builds_the_wav_sink_and_rejects_unknown_backends(tmp_path: Path) -> None:
    sink = open_output(f"wav:{tmp_path / 'out.wav'}", RATE)
    assert isinstance(sink, ClockedWavSink)
    assert (sink.path, sink.rate) == (tmp_path / "out.wav", RATE)
    with pytest.raises(ValueError, match=r"'pulse:x'.*alsa:<pcm name>.*wav:<path>"):
        open_output("pulse:x", RATE)
    with pytest.raises(ValueError, match="needs a path"):
        open_output("wav:", RATE)


def test_open_fails_cleanly_in_a_missing_directory(tmp_path: Path) -> None:
    sink = ClockedWavSink(tmp_path / "missing" / "out.wav", RATE)
    with pytest.raises(AudioOutputError, match="cannot create the capture"):
        sink.open()


def test_paces_at_the_nominal_rate_and_header_is_readable_mid_run(tmp_path: Path) -> None:
    sink = ClockedWavSink(tmp_path / "out.wav", RATE, header_interval_s=0.05)
    opened = time.monotonic()
    sink.open()
    try:
        sink.write(frames_of(tone(440, 960)), timeout=1)
        with wave.open(str(sink.path)) as reader:
            assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
                2, 2, RATE)
        wait_for(lambda: wave_frames(sink.path) > 0, 5, what="header update")
        time.sleep(1.0)
        frames = read_capture(sink.path).frames  # read before the clock: the sink goes on
        elapsed = time.monotonic() - opened
    finally:
        sink.close()
    assert frames <= elapsed * RATE + 1  # never ahead of the wall clock
    assert frames >= (elapsed - 0.5) * RATE  # and not far behind, however loaded the host
    capture = read_capture(sink.path)
    with wave.open(str(sink.path)) as reader:
        assert reader.getnframes() == capture.frames
        from_wave = np.frombuffer(reader.readframes(capture.frames), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(from_wave, capture.samples)
    burst = capture.first_non_silent()
    assert burst is not None
    assert np.array_equal(capture.samples[burst - 1:burst + 959], tone(440, 960))


def test_reopen_truncates_and_writes_a_new_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    path.write_bytes(b"stale" * 100_000)
    first_clock = ManualClock(start=1_800_000_000.0)
    first = ClockedWavSink(path, RATE, first_clock, tick_s=0.001)
    first.open()
    first_clock.advance(0.5)
    wait_for(lambda: file_frames(path) >= RATE // 2, 5, what="first run consumed")
    first.close()
    second = ClockedWavSink(path, RATE, ManualClock(start=1_900_000_000.0))
    second.open()
    try:
        capture = read_capture(path)
        assert capture.frames < RATE // 2
        assert capture.start_epoch == 1_900_000_000.0
    finally:
        second.close()


def test_capture_analysis_helpers(manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    start = sink.next_frame_index()
    sink.write(frames_of(tone(1000, 1800, amplitude=16384)), timeout=1)
    clock.advance(0.1)
    wait_for(lambda: file_frames(sink.path) >= start + 1800, 5, what="tone consumed")
    capture = read_capture(sink.path)
    segment = capture.samples[start:start + 1800]
    assert tone_frequency(segment, capture.rate) == pytest.approx(1000, abs=30)
    assert rms_dbfs(segment) == pytest.approx(-9.03, abs=0.1)  # sine at -6 dBFS peak
    assert rms_dbfs(capture.samples[start + 1800:]) == float("-inf")
    assert max_step(segment) < 3000
    assert max_step(capture.samples[start + 1790:start + 1810]) >= 0
    with pytest.raises(AssertionError, match="never"):
        wait_for(lambda: False, 0.05, what="never")


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real disk that fills up (mounting needs root, as on the rig)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)],
                   check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_disk_full_raises_audio_output_error(tiny_filesystem: Path) -> None:
    clock = ManualClock()
    sink = ClockedWavSink(tiny_filesystem / "out.wav", RATE, clock, tick_s=0.001)
    sink.open()
    try:
        clock.advance(1.0)  # 192 kB due, 64 kB of room

        def write_error() -> AudioOutputError | None:
            try:
                sink.write(bytes(4 * 48), timeout=0.1)
            except AudioOutputError as error:
                return error
            return None

        error = wait_for(write_error, 5, what="a write error")
        assert "disk full" in str(error)
        assert str(tiny_filesystem / "out.wav") in str(error)
    finally:
        sink.close()
    assert 0 < read_capture(tiny_filesystem / "out.wav").frames < RATE


def test_alsa_output_on_a_missing_card_fails_naming_the_device() -> None:
    output = open_output("alsa:hw:7,0", RATE)
    with pytest.raises(AudioOutputError, match=r"'hw:7,0'.*aplay -l"):
        output.open()


def test_alsa_output_numbers_frames_on_the_null_pcm() -> None:
    """ALSA's own `null` PCM: the real library and plugin chain, without a card. It plays
    nothing and takes every write at once, so its playhead runs on the wall clock from
    the first write's anchor. A buffer of a second, half of it written after that anchor,
    keeps a rewind of 20 ms possible for 480 ms: a slow machine cannot fail the test."""
    assert isinstance(open_output("alsa:null", RATE), AlsaOutput)
    output = AlsaOutput("null", RATE, buffer_s=1.0)
    output.open()
    try:
        assert output.next_frame_index() == 0
        assert output.playhead() == 0  # not started: nothing plays
        assert output.write(frames_of(tone(440, 480)), timeout=1) == 0
        assert output.write(frames_of(tone(440, 24_000)), timeout=1) == 480
        assert output.next_frame_index() == 24_480
        assert 0 <= output.playhead() <= 24_480  # by the first write's anchor
        assert output.frame_time(24_480) - output.frame_time(0) == pytest.approx(0.51)
        assert 0 <= output.buffered_frames() <= 24_480
        # It gives back what it has not played, all that is asked or nothing.
        assert output.rewindable() >= 960
        assert not output.rewind(output.rewindable() + 480)
        assert output.next_frame_index() == 24_480
        assert output.rewind(960) and output.next_frame_index() == 23_520
        assert output.write(frames_of(tone(440, 480)), timeout=1) == 23_520
        with pytest.raises(ValueError, match="whole number"):
            output.write(b"\x00", timeout=1)
    finally:
        output.close()
    with pytest.raises(AudioOutputError, match="not open"):
        output.write(bytes(4), timeout=1)


def test_the_playhead_moves_with_the_cards_clock_between_its_ticks_not_with_wall_time(
        manual_sink: tuple[ClockedWavSink, ManualClock]) -> None:
    sink, clock = manual_sink
    assert sink.playhead() == 0
    clock.advance(0.0123)
    assert sink.playhead() == 590  # 12.3 ms at 48 kHz, whether or not the card ticked yet
    clock.step(-30.0)  # NTP sets the wall clock back: the card plays on
    assert sink.playhead() == 590
    wait_for(lambda: sink.next_frame_index() >= 591, 5, what="the card's next tick")
    # What it counts as played: through the frame leaving now, as of its last tick.
    assert sink.next_frame_index() - sink.buffered_frames() == sink.playhead() + 1
