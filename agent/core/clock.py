"""Injected time: every component asks a Clock, so tests can drive time by hand."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from drivers.clock import Clock, SystemClock
from drivers.simfile import WatchedValue

__all__ = ["Clock", "ManualClock", "SimClock", "SystemClock", "open_clock"]

log = logging.getLogger(__name__)

SIM_FILE = "clock-sim.json"
_SIM_CHECK_S = 0.05  # how often SimClock looks for a changed file


class ManualClock:
    """A clock that moves only when told to; for deterministic tests."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def step(self, seconds: float) -> None:
        """Step wall time alone, forward or back (NTP setting the clock); monotonic time
        does not move."""
        with self._lock:
            self._now += seconds


class SimClock:
    """``clock.backend: sim``: the system clock set off by ``offset_s`` read from
    ``<state_dir>/clock-sim.json`` (``{"offset_s": -21600}``) whenever it changes; a missing
    file means no offset. It stands in for a board whose clock is wrong and then stepped
    (a Pi without RTC after a power cut, then NTP), the way the sim mains sensor stands in
    for the UPS line. The monotonic clock is the system's: a wall-clock step never moves it.
    """

    def __init__(self, state_dir: Path, check_every_s: float = _SIM_CHECK_S) -> None:
        self.path = state_dir / SIM_FILE
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._file = WatchedValue(self.path, "offset_s", 0.0, _seconds, "a number")
        self._offset_s = 0.0
        self._checked = float("-inf")

    def now(self) -> float:
        return time.time() + self._offset()

    def monotonic(self) -> float:
        return time.monotonic()

    def _offset(self) -> float:
        with self._lock:
            mono = time.monotonic()
            if mono - self._checked >= self._check_every_s:
                self._checked = mono
                offset = self._file.value()
                if offset != self._offset_s:
                    log.warning("simulated clock: wall time set off by %+.3f s", offset)
                    self._offset_s = offset
            return self._offset_s


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def open_clock(backend: str, state_dir: Path) -> Clock:
    """The agent's clock for ``clock.backend``: ``system``, or ``sim`` (test benches)."""
    return SimClock(state_dir) if backend == "sim" else SystemClock()
