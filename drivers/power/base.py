"""Mains sense interface: is the controller on mains, or on its battery/UPS?"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass(frozen=True)
class PowerSettings:
    """What the backends are built from (config `power.*`); each takes what it needs.
    ``active_high``: the line is high while mains is present."""

    state_dir: Path
    chip: str
    line: int
    active_high: bool


class MainsSensor(ABC):
    """Polled by one owner thread; a reading never blocks for long."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: PowerSettings) -> Self: ...

    @property
    @abstractmethod
    def mains_present(self) -> bool | None:
        """True on mains, False on battery, None when unknown (no sensor, or it cannot be
        read right now)."""

    @abstractmethod
    def close(self) -> None: ...
