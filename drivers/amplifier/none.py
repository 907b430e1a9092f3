"""`amplifier.backend: none`: no switchable amplifier (always-on PA); the state is only kept."""

from __future__ import annotations

from typing import Self

from drivers.amplifier.base import Amplifier, AmplifierSettings


class NoAmplifier(Amplifier):
    @classmethod
    def from_settings(cls, settings: AmplifierSettings) -> Self:
        return cls()

    def __init__(self) -> None:
        self._on = False

    def set_power(self, on: bool) -> None:
        self._on = on

    @property
    def is_on(self) -> bool:
        return self._on

    def close(self) -> None:
        self._on = False
