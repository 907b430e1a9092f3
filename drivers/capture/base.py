"""Line input interface: a capture card (a USB audio adapter's mic/line input) that
delivers what it hears as PCM, in small blocks, as it hears it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class CaptureError(RuntimeError):
    """The input cannot be opened or stopped delivering; the message says why."""


class LineCapture(ABC):
    """Captures interleaved s16le stereo at ``rate``. Not thread-safe: one owner thread
    calls open/read/close."""

    channels = 2
    sample_width = 2

    def __init__(self, rate: int) -> None:
        self.rate = rate

    @classmethod
    @abstractmethod
    def from_target(cls, target: str, rate: int) -> Self:
        """Build the input (nothing is opened before :meth:`open`)."""

    @abstractmethod
    def open(self) -> None:
        """Start capturing. Raises CaptureError."""

    @abstractmethod
    def read(self, timeout: float) -> bytes:
        """The next block of captured frames (a few milliseconds of them); b"" when none
        arrived within ``timeout``. Raises CaptureError."""

    @abstractmethod
    def close(self) -> None: ...
