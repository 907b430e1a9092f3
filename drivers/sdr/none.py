"""`fm.backend: none`: no FM receiver. Tuning it fails like a missing dongle, so a relay
asked of it raises ``sdr_missing`` with a message that says why."""

from __future__ import annotations

from typing import Self

from drivers.sdr.base import FmReceiver, SdrMissing, SdrSettings

NOT_CONFIGURED = "no FM receiver configured (fm.backend: none)"


class NoReceiver(FmReceiver):
    @classmethod
    def from_settings(cls, settings: SdrSettings) -> Self:
        return cls()

    def start(self, frequency_mhz: float) -> None:
        raise SdrMissing(NOT_CONFIGURED)

    def read(self, timeout: float) -> bytes:
        raise SdrMissing(NOT_CONFIGURED)

    @property
    def signal_dbfs(self) -> float | None:
        return None

    def stop(self) -> None:
        """Nothing to release."""
