"""FM receivers (drivers/sdr/base.py FmReceiver), chosen by ``fm.backend``."""

from __future__ import annotations

from collections.abc import Callable

from drivers.registry import backend_class
from drivers.sdr.base import FmReceiver, SdrError, SdrMissing, SdrSettings, SdrStalled

__all__ = ["BACKENDS", "FmReceiver", "SdrError", "SdrMissing", "SdrStalled",
           "receiver_factory"]

BACKENDS = {
    "rtl_fm": ("drivers.sdr.rtl_fm", "RtlFmReceiver"),
    "rtl_tcp": ("drivers.sdr.rtl_tcp", "RtlTcpReceiver"),
    "none": ("drivers.sdr.none", "NoReceiver"),
}


def receiver_factory(backend: str, *, rtl_tcp_address: str, sample_rate: int,
                     gain_db: float | None, ppm: int) -> Callable[[], FmReceiver]:
    """Makes a fresh receiver for ``fm.backend`` at each call (see SdrSettings for the
    arguments). The backend's module is imported now, so that a broken install fails at
    start-up; numpy, which both demodulate with, comes with the first relay."""
    cls = backend_class("fm.backend", BACKENDS, backend, FmReceiver)
    settings = SdrSettings(rtl_tcp_address, sample_rate, gain_db, ppm)
    return lambda: cls.from_settings(settings)
