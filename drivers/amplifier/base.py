"""Amplifier power interface: one relay or enable line."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Self


class AmplifierError(RuntimeError):
    """The power line could not be driven."""


@dataclass(frozen=True)
class AmplifierSettings:
    """What the backends are built from (config `amplifier.*`); each takes what it needs."""

    state_dir: Path
    chip: str
    line: int
    active_high: bool


class Amplifier(ABC):
    @classmethod
    @abstractmethod
    def from_settings(cls, settings: AmplifierSettings) -> Self:
        """Build the backend and put the amplifier in its initial state (off)."""

    @abstractmethod
    def set_power(self, on: bool) -> None:
        """Switch power; idempotent. Raises AmplifierError on failure."""

    @property
    @abstractmethod
    def is_on(self) -> bool: ...

    @abstractmethod
    def close(self) -> None:
        """Release the line (the relay falls back to its resting state)."""
