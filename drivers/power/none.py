"""`power.backend: none`: no mains sense; the power state is unknown."""

from __future__ import annotations

from typing import Self

from drivers.power.base import MainsSensor, PowerSettings


class NoMainsSensor(MainsSensor):
    @classmethod
    def from_settings(cls, settings: PowerSettings) -> Self:
        return cls()

    @property
    def mains_present(self) -> bool | None:
        return None

    def close(self) -> None:
        """Nothing to release."""
