"""Amplifier power interface: one relay or enable line."""

from __future__ import annotations

from abc import ABC, abstractmethod


class AmplifierError(RuntimeError):
    """The power line could not be driven."""


class Amplifier(ABC):
    @abstractmethod
    def set_power(self, on: bool) -> None:
        """Switch power; idempotent. Raises AmplifierError on failure."""

    @property
    @abstractmethod
    def is_on(self) -> bool: ...

    @abstractmethod
    def close(self) -> None:
        """Release the line (the relay falls back to its resting state)."""
