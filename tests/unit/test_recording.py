"""Off-air recording: the tap never blocks playout, the recorder keeps the card's time
line, and the rolling store survives power cuts and stays within its bounds."""

from __future__ import annotations

import importlib.util
import itertools
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Self, TypedDict, Unpack

import numpy as np
import pytest
import soundfile as sf

from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.mqtt.commands import BadArgs, Command, validate_args
from agent.recording.index import RATE, StoreView, samples_in_name
from agent.recording.recorder import Recorder, filter_delay_s
from agent.recording.span import exact_stamp
from agent.recording.store import SegmentStore, open_encoder
from agent.recording.tap import RecordingTap
from agent.recording.upload import RecordingUploader
from drivers.audio.base import AudioOutput
from drivers.audio.wav import ClockedWavSink
from tests.support.agentproc import wait_for
from tests.support.recordings import write_segment
from tests.support.source_sim import source_rig

OUT_RATE = 48_000
PERIOD = 960  # frames of one 20 ms period
EPOCH = 1_800_000_000.0


class ListOutput(AudioOutput):
    """A card that keeps every write; frame n leaves at EPOCH + n / rate."""

    def __init__(self) -> None:
        super().__init__(OUT_RATE)
        self.writes: list[bytes] = []
        self.next_index = 0

    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        return cls()

    def open(self) -> None:
        self.next_index = 0

    def write(self, frames: bytes, timeout: float) -> int:
        self.writes.append(frames)
        self.next_index += len(frames) // 4
        return self.next_index - len(frames) // 4

    def next_frame_index(self) -> int:
        return self.next_index

    def frame_time(self, index: int) -> float:
        return EPOCH + index / self.rate

    def buffered_frames(self) -> int:
        return 0

    @property
    def underrun_frames(self) -> int:
        return 0

    def close(self) -> None:
        pass


def period(value: int = 0) -> bytes:
    return np.full(PERIOD * 2, value, dtype="<i2").tobytes()


def tone_period(index: int) -> bytes:
    t = (index + np.arange(PERIOD)) / OUT_RATE
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    return np.repeat(mono, 2).tobytes()


def make_store(directory: Path, clock: ManualClock, max_bytes: int = 10**9,
               max_days: float = 14) -> SegmentStore:
    return SegmentStore(directory, max_bytes, max_days, clock.now)


def decoded_length(path: Path) -> int:
    data, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    return len(data)


# --- the tap -------------------------------------------------------------------------------

def test_tap_forwards_every_write_unchanged_and_never_blocks_on_a_full_queue(
        tmp_path: Path) -> None:
    inner = ListOutput()
    dropped: list[int] = []
    recorder = Recorder(make_store(tmp_path, ManualClock()), FaultRegistry(lambda: EPOCH),
                        OUT_RATE, inner.frame_time, on_drop=lambda: dropped.append(1),
                        queue_periods=3)  # never started: nothing drains the queue
    tap = RecordingTap(inner, recorder.offer)
    blocks = [tone_period(i * PERIOD) for i in range(20)]

    def write_all() -> None:
        for block in blocks:
            tap.write(block, timeout=1.0)
    writer = threading.Thread(target=write_all)
    writer.start()
    writer.join(30)
    assert not writer.is_alive()
    tap.close()  # hands over what the card played since the tap's last offer
    assert inner.writes == blocks
    assert recorder.dropped == 17 == len(dropped)
    assert tap.next_frame_index() == 20 * PERIOD
    assert tap.frame_time(PERIOD) == inner.frame_time(PERIOD)


def test_tap_hands_over_only_what_the_card_played_not_what_it_gave_back(
        tmp_path: Path) -> None:
    clock = ManualClock(EPOCH)
    card = ClockedWavSink(tmp_path / "card.wav", OUT_RATE, clock, tick_s=0.001)
    offered: list[tuple[int, bytes]] = []
    tap = RecordingTap(card, lambda index, frames: offered.append((index, frames)))
    assert tap.can_rewind
    tap.open()
    try:
        a, b, c, d = (tone_period(i * PERIOD) for i in range(4))
        first = tap.write(a, timeout=1.0)
        for block in (b, c):
            tap.write(block, timeout=1.0)
        assert offered == []  # none played yet
        assert tap.rewindable() == 3 * PERIOD and tap.rewind(PERIOD + PERIOD // 2)
        assert tap.write(d, timeout=1.0) == first + PERIOD + PERIOD // 2
        clock.advance(3 * PERIOD / OUT_RATE)
        wait_for(lambda: card.buffered_frames() == 0, 5, interval=0.001, what="played out")
    finally:
        tap.close()
    assert offered == [(first, a), (first + PERIOD, b[:PERIOD // 2 * 4]),
                       (first + PERIOD + PERIOD // 2, d)]


# --- the recorder --------------------------------------------------------------------------

class RecorderOptions(TypedDict, total=False):
    """The Recorder option that record() leaves open."""

    segment_s: float


def record(tmp_path: Path, writes: list[tuple[int, bytes]], rate: int = OUT_RATE,
           **kwargs: Unpack[RecorderOptions]) -> SegmentStore:
    """``writes`` (index, frames) from a card at ``rate``, recorded, the recorder stopped."""
    store = make_store(tmp_path / "rec", ManualClock(EPOCH))
    recorder = Recorder(store, FaultRegistry(lambda: EPOCH), rate,
                        lambda n: EPOCH + n / rate, on_drop=lambda: None,
                        queue_periods=10_000, **kwargs)
    for index, frames in writes:
        recorder.offer(index, frames)
    recorder.start()
    recorder.stop(timeout=60)
    return store


def test_recorder_keeps_the_card_time_line_through_underruns(tmp_path: Path) -> None:
    # 1 s of silence, a 0.5 s hole the card filled with silence, then a tone at 1.5 s.
    writes = [(i * PERIOD, period()) for i in range(50)]
    tone_from = 75 * PERIOD
    writes += [(tone_from + i * PERIOD, tone_period(tone_from + i * PERIOD)) for i in range(50)]
    store = record(tmp_path, writes)
    [segment] = store.segments()
    # The first sample is centred on the anti-alias filter's delay before the first frame.
    assert 0 < filter_delay_s(OUT_RATE) < 0.002
    assert segment.start == pytest.approx(EPOCH - filter_delay_s(OUT_RATE), abs=1e-5)
    assert segment.samples == 2.5 * RATE
    audio, _ = sf.read(segment.path, dtype="float32")
    assert len(audio) == segment.samples
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    onset_s = segment.start + loud[0] / RATE - EPOCH
    assert 1.5 - 0.002 <= onset_s <= 1.5 + 0.002
    rms = np.sqrt(np.mean(audio[round(1.6 * RATE):round(2.4 * RATE)] ** 2))
    assert rms == pytest.approx(8000 / 32768 / np.sqrt(2), rel=0.2)


@pytest.mark.parametrize("card_rate", [48_000, 44_100])
def test_recorder_resamples_any_card_rate_keeping_the_band_and_rejecting_aliases(
        tmp_path: Path, card_rate: int) -> None:
    """2 s of a 1 kHz tone, then 2 s of 8 kHz, which 12 kHz cannot carry: unfiltered, it
    would come back as 4 kHz."""
    frames = 4 * card_rate
    t = np.arange(frames) / card_rate
    mono = np.where(t < 2.0, np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 8000 * t))
    pcm = np.repeat((8000 * mono).astype("<i2"), 2).tobytes()
    period_bytes = card_rate // 50 * 4
    writes = [(offset // 4, pcm[offset:offset + period_bytes])
              for offset in range(0, len(pcm), period_bytes)]
    [segment] = record(tmp_path, writes, rate=card_rate).segments()
    assert segment.samples == 4 * RATE
    audio, _ = sf.read(segment.path, dtype="float32")
    start = round((EPOCH - segment.start) * RATE)  # the filter's delay, in output samples

    def level_dbfs(from_s: float, to_s: float) -> float:
        part = audio[start + round(from_s * RATE):start + round(to_s * RATE)]
        return float(20 * np.log10(np.sqrt(np.mean(part ** 2))))
    tone_dbfs = 20 * np.log10(8000 / 32768 / np.sqrt(2))
    assert level_dbfs(0.2, 1.8) == pytest.approx(tone_dbfs, abs=0.5)
    assert level_dbfs(2.2, 3.8) < tone_dbfs - 40


def test_recorder_cuts_segments_and_names_them_by_start_and_length(tmp_path: Path) -> None:
    writes = [(i * PERIOD, tone_period(i * PERIOD)) for i in range(250)]  # 5 s
    store = record(tmp_path, writes, segment_s=2.0)
    segments = store.segments()
    # All 5 s reach the recorder as one run: it is cut at exactly segment_s all the same.
    assert [s.samples for s in segments] == [2 * RATE, 2 * RATE, RATE]
    for before, after in itertools.pairwise(segments):
        assert after.start == pytest.approx(before.end, abs=1e-6)
    assert sum(s.samples for s in segments) == 5 * RATE
    for segment in segments:
        assert samples_in_name(segment.path) == segment.samples == decoded_length(segment.path)


def test_a_disk_that_refuses_raises_recording_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "rec"
    blocker.write_text("not a directory")
    faults = FaultRegistry(lambda: EPOCH)
    recorder = Recorder(SegmentStore(blocker / "sub", 10**9, 14, lambda: EPOCH), faults,
                        OUT_RATE, lambda n: EPOCH + n / OUT_RATE, on_drop=lambda: None)
    recorder.offer(0, period())
    recorder.start()
    recorder.stop(timeout=30)
    assert [f.code for f in faults.active()] == ["recording_failed"]


# --- the store -----------------------------------------------------------------------------

def test_store_keeps_within_max_bytes_deleting_the_oldest(tmp_path: Path) -> None:
    clock = ManualClock(EPOCH)
    store = make_store(tmp_path, clock)
    write_segment(store, EPOCH, 2.0)
    one = store.size
    store.max_bytes = int(one * 2.5)
    for i in range(1, 5):
        write_segment(store, EPOCH + 2 * i, 2.0)
    kept = store.segments()
    assert [s.start for s in kept] == [EPOCH + 6, EPOCH + 8]
    assert store.size <= store.max_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.path.name for s in kept)
    assert store.since == EPOCH + 6


def test_store_deletes_segments_older_than_max_days(tmp_path: Path) -> None:
    clock = ManualClock(EPOCH)
    store = make_store(tmp_path, clock, max_days=1)
    write_segment(store, EPOCH - 3 * 86_400, 1.0)
    write_segment(store, EPOCH - 3600, 1.0)
    write_segment(store, EPOCH, 1.0)
    assert [s.start for s in store.segments()] == [EPOCH - 3600, EPOCH]


def test_soundfile_encodes_with_the_systems_libsndfile() -> None:
    """The install builds soundfile from its source (Makefile, build-deb.sh): the
    libsndfile its wheels bundle took three times the CPU to encode Opus."""
    assert importlib.util.find_spec("_soundfile_data") is None
    assert re.search(r" /(usr/)?lib/[^/]+-linux-gnu/libsndfile\.so",
                     Path("/proc/self/maps").read_text())


def test_store_after_a_power_cut_indexes_only_what_decodes(tmp_path: Path) -> None:
    clock = ManualClock(EPOCH)
    store = make_store(tmp_path, clock)
    write_segment(store, EPOCH, 2.0)
    # The open segment of the moment of the cut: 3 s written, the file cut in the middle.
    open_start = EPOCH + 2
    whole = tmp_path / "whole.ogg"
    with open_encoder(whole) as encoder:
        encoder.write(np.full(3 * RATE, 0.2, np.float32))
    blob = whole.read_bytes()
    whole.unlink()
    store.partial_path(open_start).write_bytes(blob[:len(blob) // 2])
    store.partial_path(EPOCH + 10).write_bytes(b"")  # created, nothing written yet
    (tmp_path / "123.partial.repair").write_bytes(b"OggS")  # a repair cut short

    after = make_store(tmp_path, clock)
    partials = after.load()
    assert [p.name for p in partials] == [store.partial_path(open_start).name,
                                          store.partial_path(EPOCH + 10).name]
    repaired = after.repair(partials[0])
    assert after.repair(partials[1]) is None
    assert repaired is not None and repaired.start == open_start
    assert 0 < repaired.samples < 3 * RATE
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(s.path.name for s in after.segments())
    for segment in after.segments():
        assert decoded_length(segment.path) == samples_in_name(segment.path)
    recording = after.span(EPOCH + 1, EPOCH + 3)
    assert recording is not None and recording.start == EPOCH
    assert recording.segments == tuple(s.path.name for s in after.segments())
    assert after.span(EPOCH + 100, EPOCH + 200) is None


# --- the command ---------------------------------------------------------------------------

def test_upload_recording_args_are_a_span_of_at_most_an_hour() -> None:
    args = validate_args("upload_recording", {"from": "2026-11-23T06:00:00+07:00",
                                              "to": "2026-11-23T07:00:00+07:00"})
    assert args["to"] - args["from"] == 3600
    for bad in ({"from": "2026-11-23T06:00:00+07:00", "to": "2026-11-23T07:00:01+07:00"},
                {"from": "2026-11-23T06:00:00+07:00", "to": "2026-11-23T06:00:00+07:00"},
                {"from": "2026-11-23T06:00:00", "to": "2026-11-23T06:10:00+07:00"},
                {"from": "2026-11-23T06:00:00+07:00"}):
        with pytest.raises(BadArgs):
            validate_args("upload_recording", bad)


# --- the upload ----------------------------------------------------------------------------

def upload_command(first: float, last: float, expires_at: float) -> Command:
    return Command("c-1", "upload_recording", {"from": first, "to": last}, first, expires_at)


def test_upload_puts_the_span_and_retries_until_the_command_expires(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        store = make_store(tmp_path / "rec", rig.clock)
        store.load()
        write_segment(store, EPOCH, 2.0)

        def backoff() -> float:  # each wait lets 10 s pass on the agent's clock
            rig.clock.advance(10)
            return 0.0
        uploads = RecordingUploader(StoreView(store.directory), rig.client, rig.journal,
                                    rig.clock, lambda *_: None, max_backoff_s=60,
                                    segment_s=60, rand=backoff)
        now = rig.clock.now()
        assert uploads.upload(upload_command(EPOCH + 0.5, EPOCH + 1.5, now + 60)) == (
            "completed", None)
        [stored] = rig.sim.recordings()
        assert stored["start"] == exact_stamp(EPOCH)
        assert stored["segments"] == store.segments()[0].path.name
        assert stored["bytes"] == store.size
        assert datetime.fromisoformat(stored["from"]).timestamp() == EPOCH + 0.5

        rig.sim.set_faults(recordings_status=503)
        status, reason = uploads.upload(upload_command(EPOCH, EPOCH + 1, now + 35))
        assert reason is not None
        assert (status, reason.split(":")[0]) == ("failed", "source_unreachable")
        assert rig.sim.stats()["requests"]["recordings"] == 1 + 4

        status, reason = uploads.upload(upload_command(EPOCH - 100, EPOCH - 50, now + 35))
        assert reason is not None
        assert (status, reason.split(":")[0]) == ("failed", "not_recorded")
        off = RecordingUploader(None, rig.client, rig.journal, rig.clock, lambda *_: None,
                                max_backoff_s=60, segment_s=60)
        assert off.upload(upload_command(EPOCH, EPOCH + 1, now + 35))[0] == "failed"
