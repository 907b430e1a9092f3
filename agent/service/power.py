"""Mains sense (issue: battery and UPS boards): the "power" thread polls the MainsSensor,
keeps Status ``power`` and raises fault ``mains_lost`` (warning) while on battery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

from agent.core.faults import FaultRegistry
from drivers.power import MainsSensor
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

PowerState = Literal["mains", "battery", "unknown"]
POLL_INTERVAL_S = 0.2  # mains_lost follows the line within this (hil.md asks for 1 s)
JOIN_TIMEOUT_S = 3.0


def power_state(mains_present: bool | None) -> PowerState:
    if mains_present is None:
        return "unknown"
    return "mains" if mains_present else "battery"


class PowerMonitor:
    def __init__(self, sensor: MainsSensor, faults: FaultRegistry,
                 on_change: Callable[[], None]) -> None:
        self._sensor = sensor
        self._faults = faults
        self._on_change = on_change
        self._state: PowerState = "unknown"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> PowerState:
        return self._state

    def poll(self) -> None:
        """Read the sensor once; on a change, raise or clear ``mains_lost`` and notify."""
        state = power_state(self._sensor.mains_present)
        if state == self._state:
            return
        self._state = state
        log.info("power: %s", state)
        if state == "battery":
            self._faults.raise_("mains_lost", "no mains: running on the battery or UPS")
        else:
            # Unknown (the sensor cannot be read) is not evidence of an outage.
            self._faults.clear("mains_lost")
        self._on_change()

    def start(self) -> None:
        self.poll()  # Status is right from the first report
        self._thread = NamedThread(target=self._run, name="power", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                self.poll()
            except Exception:  # a sensor bug must not end mains sense for good
                log.exception("mains sense failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.error("power thread did not stop within %.0f s", JOIN_TIMEOUT_S)
        self._sensor.close()
