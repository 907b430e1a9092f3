"""FM receivers (drivers/sdr/base.py FmReceiver), chosen by ``fm.backend``."""

from __future__ import annotations

from drivers.registry import backend_class
from drivers.sdr.base import FmReceiver, SdrError, SdrMissing, SdrSettings, SdrStalled

__all__ = ["BACKENDS", "FmReceiver", "SdrError", "SdrMissing", "SdrStalled", "open_receiver"]

BACKENDS = {
    "rtl_fm": ("drivers.sdr.rtl_fm", "RtlFmReceiver"),
    "rtl_tcp": ("drivers.sdr.rtl_tcp", "RtlTcpReceiver"),
    "none": ("drivers.sdr.none", "NoReceiver"),
}


def open_receiver(backend: str, *, rtl_tcp_address: str, sample_rate: int,
                  gain_db: float | None, ppm: int) -> FmReceiver:
    """The receiver for ``fm.backend`` (see SdrSettings for the arguments)."""
    cls = backend_class("fm.backend", BACKENDS, backend, FmReceiver)
    return cls.from_settings(SdrSettings(rtl_tcp_address, sample_rate, gain_db, ppm))
