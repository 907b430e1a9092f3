"""SDR receiver interface: a tuner that delivers demodulated wideband FM as PCM."""

from __future__ import annotations

from abc import ABC, abstractmethod


class SdrError(RuntimeError):
    """Base of receiver failures."""


class SdrMissing(SdrError):
    """No dongle (or no rtl_tcp server) to talk to."""


class SdrStalled(SdrError):
    """The receiver stopped delivering samples."""


class FmReceiver(ABC):
    """Tunes one station and yields 48 kHz stereo s16le PCM (mono duplicated).

    Not thread-safe: one owner thread calls start/read/stop.
    """

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
