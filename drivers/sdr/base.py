"""SDR receiver interface: a tuner that delivers demodulated wideband FM as PCM."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self


class SdrError(RuntimeError):
    """Base of receiver failures."""


class SdrMissing(SdrError):
    """No dongle (or no rtl_tcp server) to talk to."""


class SdrStalled(SdrError):
    """The receiver stopped delivering samples."""


@dataclass(frozen=True)
class SdrSettings:
    """What the backends are built from (config `fm.*`); each takes what it needs.
    ``gain_db`` None is automatic gain; ``sample_rate`` is the IQ rate of the rtl_tcp
    backend (rtl_fm picks its own)."""

    rtl_tcp_address: str
    sample_rate: int
    gain_db: float | None
    ppm: int


class FmReceiver(ABC):
    """Tunes one station and yields 48 kHz stereo s16le PCM (mono duplicated).

    Not thread-safe: one owner thread calls start/read/stop.
    """

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: SdrSettings) -> Self:
        """Build the receiver (nothing is opened before :meth:`start`)."""

    @abstractmethod
    def start(self, frequency_mhz: float) -> None:
        """Connect and tune. Raises SdrMissing when there is no device."""

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """Next block of PCM (interleaved s16le stereo at 48 kHz); b"" when nothing arrived
        within ``timeout``. Raises SdrStalled/SdrMissing on failure."""

    @property
    @abstractmethod
    def signal_dbfs(self) -> float | None:
        """Channel power per hil.md, None before the first block."""

    @abstractmethod
    def stop(self) -> None: ...
