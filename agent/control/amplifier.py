"""Amplifier power: when the relay should be on (a pure decider), and the one place that
switches it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from drivers.amplifier.base import Amplifier, AmplifierError

WARMUP_MARGIN_S = 0.25  # switched on this much before the warm-up must begin


@dataclass
class AmplifierPolicy:
    """On ``warmup_s`` (plus a margin) before anything starts and while anything plays; off
    ``idle_off_s`` after the last sound or after switching on, whichever is later (so an
    amplifier warmed for a program that could not play still idles off). A forced state
    (the ``amplifier`` command) holds until the next play's warm-up (mqtt.md)."""

    warmup_s: float
    idle_off_s: float
    forced: bool | None = None

    def wanted(self, now: float, next_start: float | None, busy: bool,
               idle_since: float | None, on_since: float | None) -> bool | None:
        """The power to switch to, or None to leave it as it is. ``busy``: something plays
        or is cued; ``idle_since``: when the card last carried sound (None while it does)."""
        soon = next_start is not None and next_start - self.warmup_s - WARMUP_MARGIN_S <= now
        if soon:
            self.forced = None
        if self.forced is not None:
            return self.forced
        if idle_since is None or busy or soon:
            return True
        if max(idle_since, on_since or 0.0) + self.idle_off_s <= now:
            return False
        return None

    def off_due(self, idle_since: float | None, on_since: float | None) -> float | None:
        """When an amplifier left on would idle off (None: not while it is forced or the
        card carries sound), so that the deciding thread wakes then and not a tick late."""
        if self.forced is not None or idle_since is None:
            return None
        return max(idle_since, on_since or 0.0) + self.idle_off_s


class AmplifierSwitch:
    """Switches the amplifier, remembering since when it is on; a refusal of the line
    raises fault ``amplifier`` (cleared by the next switch that works)."""

    def __init__(self, amplifier: Amplifier, faults: FaultRegistry, clock: Clock,
                 on_change: Callable[[], None]) -> None:
        self._amp = amplifier
        self._faults = faults
        self._clock = clock
        self._on_change = on_change
        self._on_since_mono: float | None = None

    @property
    def on_since(self) -> float | None:
        """Wall time it was switched on; kept in monotonic time, so that a step of the
        wall clock does not make it seem switched on in the future (and a start wait for
        a warm-up that long)."""
        if self._on_since_mono is None:
            return None
        return self._clock.now() - (self._clock.monotonic() - self._on_since_mono)

    @property
    def is_on(self) -> bool:
        return self._amp.is_on

    def set(self, on: bool) -> None:
        if self._amp.is_on == on and (not on or self.on_since is not None):
            return
        try:
            self._amp.set_power(on)
        except AmplifierError as exc:
            self._faults.raise_("amplifier", str(exc))
            return
        self._faults.clear("amplifier")
        self._on_since_mono = self._clock.monotonic() if on else None
        self._on_change()

    def ready_at(self, now: float, warmup_s: float) -> float | None:
        """Switches on if need be; when a start may sound (None: at once)."""
        if not self._amp.is_on or self.on_since is None:
            self.set(True)
        if self.on_since is None:  # the line refused: sound anyway
            return None
        ready = self.on_since + warmup_s
        return ready if ready > now else None
