"""`audio.mixer: null`: the playout engine applies the level as a gain on the samples."""

from __future__ import annotations

from typing import Self

from drivers.mixer.base import Mixer, MixerControl
from drivers.mixer.curve import volume_to_gain


class SoftwareMixer(Mixer):
    def __init__(self, volume: int = 100) -> None:
        self._gain = volume_to_gain(volume)
        self.volume = volume

    @classmethod
    def from_control(cls, control: MixerControl | None) -> Self:
        return cls()

    @property
    def hardware(self) -> bool:
        return False

    def set_volume(self, volume: int) -> None:
        self._gain = volume_to_gain(volume)  # validates first: a bad volume changes nothing
        self.volume = volume

    def software_gain(self) -> float:
        return self._gain
