"""The clock a driver is given: wall time to stamp what it does, monotonic time to pace it.

Drivers never import the agent; the agent's clocks (``agent.core.clock``) satisfy this
protocol, and so does anything a test passes in.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, Unix seconds."""

    def monotonic(self) -> float:
        """Monotonic seconds, for intervals and timeouts."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
