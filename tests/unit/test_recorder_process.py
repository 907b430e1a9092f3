"""Off-air recording across processes: the agent's view of a store another process writes,
and the real recorder process fed through the record pipe (agent.recording.process)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.playout import channel
from agent.playout.host import RECORD_CHUNK
from agent.playout.voice import BYTES_PER_FRAME
from agent.recording.index import RATE, StoreView
from agent.recording.process import FIRST_RETRY_S, RecorderProcess, RecorderSettings
from agent.recording.recorder import filter_delay_s
from agent.recording.store import SegmentStore
from agent.recording.worker import ALIVE_EVERY_S, FrameGrid
from tests.support.agentproc import wait_for
from tests.support.recordings import write_segment
from tests.support.scripts import write_script

CARD_RATE = 48_000
# The agent gives its recorder 5 s to close its segment at shutdown; a parallel suite can
# starve a recorder (at nice 5) still importing numpy when the test stops it.
STOP_TIMEOUT_S = 60.0
EPOCH = 1_800_000_000.0
FIR_DELAY_S = filter_delay_s(CARD_RATE)  # compensated in each segment's start


# --- the view ------------------------------------------------------------------------------

def test_the_view_follows_the_store_another_process_writes(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, 10**9, 14, lambda: EPOCH)
    store.load()
    view = StoreView(tmp_path, max_age_s=3600, monotonic=ManualClock(0).monotonic)
    assert view.status() == {"since": None, "bytes": 0}
    write_segment(store, EPOCH, 2.0)
    store.partial_path(EPOCH + 2).write_bytes(b"OggS")  # the open segment
    assert view.status() == {"since": EPOCH, "bytes": store.size}
    assert view.open_start == EPOCH + 2
    assert view.segment_holding(EPOCH + 1) == EPOCH
    assert view.segment_holding(EPOCH + 5) == EPOCH + 2
    assert view.segment_holding(EPOCH - 1) is None
    assert view.end == EPOCH + 2


def test_a_span_read_while_the_recorder_prunes_is_listed_again(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, 10**9, 14, lambda: EPOCH)
    store.load()
    for i in range(3):
        write_segment(store, EPOCH + 2 * i, 2.0)
    view = StoreView(tmp_path, max_age_s=3600, monotonic=ManualClock(0).monotonic)
    assert len(view.segments()) == 3
    # The recorder prunes the oldest between the view's listing and its reading: the
    # directory's mtime is put back so that the view still trusts its listing.
    listed = tmp_path.stat()
    store.segments()[0].path.unlink()
    os.utime(tmp_path, ns=(listed.st_atime_ns, listed.st_mtime_ns))
    recording = view.span(EPOCH, EPOCH + 6)
    assert recording is not None
    assert recording.start == EPOCH + 2
    assert recording.segments == tuple(s.path.name for s in store.segments()[1:])


# --- the frame grid ------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0.0, 0.3, 0.5, 0.4999999, 0.7])
def test_records_map_to_contiguous_frames_wherever_the_cards_frames_fall(
        offset: float) -> None:
    """Records 1021 frames long (as the playout process writes them) from a card whose
    frames sit ``offset`` of a frame off the recorder's grid."""
    grid = FrameGrid(EPOCH, CARD_RATE)
    first = EPOCH + (5000 + offset) / CARD_RATE
    indices = [grid.frame_at(first + k * 1021 / CARD_RATE) for k in range(500)]
    assert [b - a for a, b in itertools.pairwise(indices)] == [1021] * 499
    assert grid.time_of(indices[0]) == pytest.approx(first, abs=1e-9)


# --- the process ---------------------------------------------------------------------------

def settings(directory: Path, segment_s: float = 1.0) -> RecorderSettings:
    return RecorderSettings(str(directory), 10**9, 14, segment_s, CARD_RATE)


def send(fd: int, at: float, frames: bytes) -> None:
    """As the playout process writes what left the card (agent.playout.host), waiting for
    room instead of dropping."""
    for offset in range(0, len(frames), RECORD_CHUNK):
        chunk = frames[offset:offset + RECORD_CHUNK]
        record = channel.RECORD_HEADER.pack(at + offset // BYTES_PER_FRAME / CARD_RATE,
                                            len(chunk)) + chunk
        while True:
            try:
                os.write(fd, record)
                break
            except BlockingIOError:
                time.sleep(0.01)


def tone(seconds: float) -> bytes:
    t = np.arange(round(seconds * CARD_RATE)) / CARD_RATE
    return np.repeat((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2"), 2).tobytes()


def recorded(directory: Path) -> list[tuple[float, int]]:
    """(start, samples) of each closed segment, checked against what decodes."""
    segments = []
    for path in sorted(directory.glob("*.opus")):
        start, samples = path.stem.split("-")
        assert sf.info(path).frames == int(samples)
        segments.append((int(start) / 1e6, int(samples)))
    return segments


def test_the_recorder_process_records_the_pipe_and_closes_its_segment_at_stop(
        tmp_path: Path) -> None:
    faults = FaultRegistry(lambda: EPOCH)
    drops: list[int] = []
    recorder = RecorderProcess(settings(tmp_path / "rec"), faults, drops.append)
    recorder.start()
    try:
        at = time.time()
        send(recorder.write_fd, at, tone(2.5))
    finally:
        recorder.stop(timeout=STOP_TIMEOUT_S)
    segments = recorded(tmp_path / "rec")
    assert [samples for _, samples in segments] == [RATE, RATE, RATE // 2]
    assert segments[0][0] == pytest.approx(at - FIR_DELAY_S, abs=1e-4)
    assert segments[2][0] == pytest.approx(at + 2 - FIR_DELAY_S, abs=1e-4)
    assert faults.active() == [] and drops == []
    assert recorder.pid is None


def test_a_stop_right_after_the_start_records_what_the_pipe_held(tmp_path: Path) -> None:
    """The recorder process is started by start() itself: a fresh-clone run stopped one
    before its watch thread had started the process, and what the pipe held was lost."""
    faults = FaultRegistry(lambda: EPOCH)
    recorder = RecorderProcess(settings(tmp_path / "rec"), faults, lambda periods: None)
    at = time.time()
    send(recorder.write_fd, at, tone(1.5))
    recorder.start()
    recorder.stop(timeout=STOP_TIMEOUT_S)
    assert [samples for _, samples in recorded(tmp_path / "rec")] == [RATE, RATE // 2]
    assert faults.active() == []


def test_a_recorder_process_that_dies_is_a_fault_until_it_records_again(
        tmp_path: Path) -> None:
    faults = FaultRegistry(lambda: EPOCH)
    recorder = RecorderProcess(settings(tmp_path / "rec", segment_s=0.5), faults,
                               lambda periods: None)
    recorder.start()
    try:
        first = wait_for(lambda: recorder.pid, 10, 0.05, "the recorder process")
        os.kill(first, signal.SIGKILL)
        [fault] = wait_for(faults.active, 10, 0.05, "recording_failed")
        assert fault.code == "recording_failed"
        assert fault.message == "the recorder process exited with signal 9"
        second = wait_for(lambda: recorder.pid not in (None, first) and recorder.pid,
                          FIRST_RETRY_S + 10, 0.05, "the recorder started again")
        assert second != first
        send(recorder.write_fd, time.time(), tone(1.0))
        wait_for(lambda: faults.active() == [], 30, 0.05, "recording_failed cleared")
    finally:
        recorder.stop(timeout=STOP_TIMEOUT_S)
    assert sum(samples for _, samples in recorded(tmp_path / "rec")) == RATE


def test_a_recorder_process_that_hangs_is_killed_a_fault_and_started_again(
        tmp_path: Path) -> None:
    """A recorder frozen (here by SIGSTOP; in the field, stuck on a dead disk) records
    nothing while the card plays: the fault says so, and a new recorder takes over."""
    faults = FaultRegistry(lambda: EPOCH)
    recorder = RecorderProcess(settings(tmp_path / "rec", segment_s=0.5), faults,
                               lambda periods: None, hung_after_s=3.0)
    recorder.start()
    try:
        frozen = wait_for(lambda: recorder.pid, 10, 0.05, "the recorder process")
        # Its imports done (a loaded machine can take longer than the 3 s allowed here,
        # and the watch rightly kills a recorder silent from its start): it makes the
        # store's directory, then its recorder thread reports each turn.
        wait_for((tmp_path / "rec").is_dir, 30, 0.05, "the recorder's start")
        time.sleep(1.5)  # alive, reporting so every second: no fault
        assert faults.active() == []
        os.kill(frozen, signal.SIGSTOP)
        frozen_at = time.monotonic()
        [fault] = wait_for(lambda: [f for f in faults.active() if "exited" in f.message],
                           10, 0.05, "recording_failed, once it was killed")
        # Its last sign of life came up to ALIVE_EVERY_S before the freeze.
        assert time.monotonic() - frozen_at >= 3.0 - ALIVE_EVERY_S
        assert fault.message == ("the recorder process gave no sign of life for 3 s: "
                                 "killed; the recorder process exited with signal 9")
        wait_for(lambda: recorder.pid not in (None, frozen), FIRST_RETRY_S + 10, 0.05,
                 "the recorder started again")
        send(recorder.write_fd, time.time(), tone(1.0))
        wait_for(lambda: faults.active() == [], 30, 0.05, "recording_failed cleared")
    finally:
        recorder.stop(timeout=STOP_TIMEOUT_S)
    assert sum(samples for _, samples in recorded(tmp_path / "rec")) == RATE


def test_what_the_recorder_process_says_wrong_is_logged_and_its_failure_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    impostor = tmp_path / "impostor"
    write_script(impostor, '#!/bin/sh\necho "not json"\necho \'{"what": 1}\'\n'
                           'echo \'{"failed": "disk on fire"}\'\nexit 3\n')
    faults = FaultRegistry(lambda: EPOCH)
    recorder = RecorderProcess(settings(tmp_path / "rec"), faults, lambda periods: None,
                               interpreter=str(impostor))
    with caplog.at_level(logging.WARNING, "agent.recording.process"):
        recorder.start()
        try:
            wait_for(lambda: any("exited" in f.message for f in faults.active()), 10, 0.05,
                     "its exit")
        finally:
            recorder.stop(timeout=STOP_TIMEOUT_S)
    assert faults.active()[0].message == \
        "disk on fire; the recorder process exited with status 3"
    not_understood = [r for r in caplog.records if "not understood" in r.getMessage()]
    assert len(not_understood) == 2
