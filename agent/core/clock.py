"""Injected time: every component asks a Clock, so tests can drive time by hand."""

from __future__ import annotations

import threading

from drivers.clock import Clock, SystemClock

__all__ = ["Clock", "ManualClock", "SystemClock"]


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
