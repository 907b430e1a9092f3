"""`power.backend: sim` (hil.md): reads `<state_dir>/power-sim.json`, `{"mains": true|false}`,
whenever it changes; a missing file means mains present. A file that cannot be parsed
(a test writing it in place, caught half-written) keeps the last reading."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from drivers.power.base import MainsSensor, PowerSettings
from drivers.simfile import WatchedValue

FILE_NAME = "power-sim.json"


class SimMainsSensor(MainsSensor):
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._mains = WatchedValue(self.path, "mains", True,
                                   lambda v: v if isinstance(v, bool) else None,
                                   "true or false")

    @classmethod
    def from_settings(cls, settings: PowerSettings) -> Self:
        return cls(settings.state_dir)

    @property
    def mains_present(self) -> bool | None:
        return self._mains.value()

    def close(self) -> None:
        """Nothing to release."""
