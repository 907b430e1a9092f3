"""The load of issue 10, "Must show", shared by tests/e2e/test_load.py and
bench/bench_load.py: CPU hogs on every core, a big schedule published anew every poll,
bursts of signed commands, and how many 5 ms windows of a tone went silent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from tests.support.central import Central
from tests.support.wavfile import Capture, quiet_runs

WINDOW = 240  # 5 ms at 48 kHz
SILENT_PEAK = 64  # a 5 ms window of a -6 dBFS tone peaks far above this
BIG_PROGRAMS = 1_500
REPUBLISH_S = 5.0  # source.poll_interval_s of the test agents
SYNC_COMMANDS = 100
VOLUME_COMMANDS = 400


def silent_windows(capture: Capture, start: float, seconds: float) -> list[float]:
    """Start times of the 5 ms windows of ``[start, start + seconds]`` that carry no
    sound on the first channel."""
    first = capture.index_at(start)
    span = capture.samples[first:first + round(seconds * capture.rate), 0]
    windows = np.abs(span[:span.size // WINDOW * WINDOW].astype(np.int32)).reshape(-1, WINDOW)
    return [capture.time_of(first + int(n) * WINDOW)
            for n in np.flatnonzero(windows.max(axis=1) <= SILENT_PEAK)]


def zero_runs(capture: Capture, start: float, seconds: float,
              min_frames: int) -> list[tuple[float, int]]:
    """(start time, frames) of every run of at least ``min_frames`` frames of ``[start,
    start + seconds]`` that are exact digital zero on both channels: what the card pads
    an underrun with, which a tone never holds for even two frames."""
    first = capture.index_at(start)
    span = capture.samples[first:first + round(seconds * capture.rate)]
    return [(capture.time_of(first + offset), frames)
            for offset, frames in quiet_runs(span, 1) if frames >= min_frames]


class CpuHogs:
    """One busy loop per core, at normal priority, for the time of a ``with``."""

    def __init__(self) -> None:
        self._hogs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuHogs:
        self._hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(os.cpu_count() or 1)]
        return self

    def __exit__(self, *_: object) -> None:
        for hog in self._hogs:
            hog.kill()
            hog.wait()


def big_schedule(media_id: str) -> list[dict[str, Any]]:
    """Programs on a day that is not today: parsed at every fetch, never aired."""
    day = (datetime.now() + timedelta(days=30)).date().isoformat()
    return [{"id": f"p-big-{n}", "title": f"Bản tin {n}", "priority": "scheduled",
             "source": {"type": "media", "items": [media_id]}, "dates": [day],
             "start": f"{n // 60 % 24:02d}:{n % 60:02d}:00"} for n in range(BIG_PROGRAMS)]


class Republisher:
    """Calls ``publish`` (a new schedule version) every poll, on its own thread."""

    def __init__(self, publish: Callable[[], object]) -> None:
        self._publish = publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="republisher", daemon=True)
        self.published = 0

    def __enter__(self) -> Republisher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(REPUBLISH_S):
            self._publish()
            self.published += 1


def command_burst(central: Central) -> list[dict[str, Any]]:
    """``sync_now`` commands, each a fetch and parse of the big schedule, among
    ``set_volume`` commands that keep the volume where it is (persisted at each one)."""
    commands = [central.command("set_volume", {"volume": 100}) for _ in range(VOLUME_COMMANDS)]
    for n in range(SYNC_COMMANDS):
        commands.insert(n * len(commands) // SYNC_COMMANDS, central.command("sync_now", {}))
    return commands
