"""Mixer interface: where the output level is applied."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self


class MixerError(RuntimeError):
    """The hardware mixer control cannot be opened or set."""


@dataclass(frozen=True)
class MixerControl:
    """`audio.mixer: {card, control}`: a hardware mixer control."""

    card: int
    control: str


class Mixer(ABC):
    @classmethod
    @abstractmethod
    def from_control(cls, control: MixerControl | None) -> Self:
        """Build the backend for the configured control (None: no hardware mixer)."""

    @property
    @abstractmethod
    def hardware(self) -> bool:
        """True when the level is applied by the device; False for software gain."""

    @abstractmethod
    def set_volume(self, volume: int) -> None:
        """Set the level, 0..100 on the agent's own curve (docs/audio.md)."""

    @abstractmethod
    def software_gain(self) -> float:
        """Linear factor the playout engine multiplies samples by (1.0 for hardware)."""
