"""The recorder process (``python -m agent.recording.worker``): what left the card, read
from the playout process's record pipe, downmixed, decimated and encoded into the store.

It runs apart from the agent so that numpy and libsndfile load here, not in the agent.
Records are (wall time of the first frame, frames) (agent.playout.channel); the time is
mapped onto a frame numbering of this process's own, which is all the recorder needs to
see holes in the card's time line. What the agent must know comes out on stdout, one JSON
object a line: ``{"failed": reason}``, ``{"stored": unix_time}`` (a segment was closed, so
recording works), ``{"dropped": periods}``, and ``{"alive": unix_time}`` every
``ALIVE_EVERY_S`` while the recorder thread turns (the agent kills a recorder that falls
silent: agent.recording.process).

It stops at the end of the pipe (every writer closed it: the agent stopping) or on
SIGTERM, closing its open segment either way. A lock on the store's directory lets a
recorder that outlived its agent finish before the next one starts.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TextIO

from agent.playout import channel
from agent.recording.recorder import BATCH_S, Recorder
from agent.recording.store import SegmentStore
from agent.service.logs import configure_logging

log = logging.getLogger(__name__)

# The record pipe holds seconds of records (feed.PIPE_BYTES): the reader wakes as often as
# the recorder takes them (BATCH_S), and one that fell behind catches up at about 2.7 times
# real time (48 kHz records), never offering more than the recorder's queue holds.
READ_CHUNK = 512 * 1024
ALIVE_EVERY_S = 1.0


class Reports:
    """What the agent is told, as :class:`Recorder` raises and clears its fault (on the
    recorder thread) and the reader counts dropped periods (on the main thread)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._dropped = 0
        self._alive_at = 0.0

    def _send(self, message: dict[str, object]) -> None:
        try:
            with self._lock:
                self._out.write(json.dumps(message) + "\n")
                self._out.flush()
        except (BrokenPipeError, ValueError):  # the agent is gone: the pipe ends the rest
            pass

    def raise_(self, code: str, message: str) -> None:
        self._send({"failed": message})

    def clear(self, code: str) -> None:
        self._send({"stored": time.time()})

    def alive(self) -> None:
        now = time.monotonic()
        if now - self._alive_at >= ALIVE_EVERY_S:
            self._alive_at = now
            self._send({"alive": time.time()})

    def count_drop(self) -> None:
        self._dropped += 1

    def flush_drops(self) -> None:
        if self._dropped:
            self._send({"dropped": self._dropped})
            self._dropped = 0


class FrameGrid:
    """The recorder's frame numbering over wall time. The card's frames may fall half-way
    between two of ours, where the float error of each record's time would round
    consecutive records a frame apart (a one-frame hole recorded as silence, or a step
    back that closes the segment); so whenever a record's time is more than a quarter of
    a frame off the grid, the grid slides onto it (by under half a frame: 10 µs)."""

    def __init__(self, epoch: float, rate: int) -> None:
        self._epoch = epoch
        self._rate = rate

    def frame_at(self, at: float) -> int:
        position = (at - self._epoch) * self._rate
        index = round(position)
        if abs(position - index) > 0.25:
            self._epoch = at - index / self._rate
        return index

    def time_of(self, index: int) -> float:
        return self._epoch + index / self._rate


def read_records(fd: int, recorder: Recorder, reports: Reports,
                 frame_at: Callable[[float], int]) -> None:
    """Until the end of the pipe: every whole record to ``recorder``, its wall time placed
    on the recorder's frames by ``frame_at``."""
    header = channel.RECORD_HEADER
    pending = bytearray()
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(READ_CHUNK):
            pending += chunk
            taken = 0
            while len(pending) - taken >= header.size:
                at, length = header.unpack_from(pending, taken)
                end = taken + header.size + length
                if end > len(pending):
                    break
                recorder.offer(frame_at(at), bytes(pending[taken + header.size:end]))
                taken = end
            del pending[:taken]
            reports.flush_drops()
            time.sleep(BATCH_S)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broadcast-agent-recorder")
    parser.add_argument("--record-fd", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--max-days", type=float, required=True)
    parser.add_argument("--segment-s", type=float, required=True)
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, "%(levelname)s recorder %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    os.nice(5)  # below the agent; the playout process is real-time anyway
    reports = Reports(sys.stdout)
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(args.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.error("cannot open the recording directory: %s", exc)
        reports.raise_("recording_failed", f"cannot open the recording directory: {exc}")
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = SegmentStore(args.dir, args.max_bytes, args.max_days, time.time)
        grid = FrameGrid(time.time(), args.rate)
        recorder = Recorder(store, reports, args.rate, grid.time_of,
                            on_drop=reports.count_drop, on_turn=reports.alive,
                            segment_s=args.segment_s)
        recorder.start()
        try:
            read_records(args.record_fd, recorder, reports, grid.frame_at)
        finally:
            recorder.stop()
    finally:
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
