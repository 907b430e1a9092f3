"""FM receivers (drivers/sdr/base.py FmReceiver), chosen by ``fm.backend``."""

from __future__ import annotations

from drivers.sdr.base import FmReceiver, SdrError, SdrMissing, SdrStalled
from drivers.sdr.rtl_fm import RtlFmReceiver
from drivers.sdr.rtl_tcp import RtlTcpReceiver

BACKENDS = ("rtl_fm", "rtl_tcp", "none")

__all__ = ["BACKENDS", "FmReceiver", "SdrError", "SdrMissing", "SdrStalled", "open_receiver",
           "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:1234``) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rtl_tcp address must be host:port, got {address!r}")
    return host, int(port)


def open_receiver(backend: str, *, rtl_tcp_address: str, sample_rate: int,
                  gain_db: float | None, ppm: int) -> FmReceiver | None:
    """The receiver for ``fm.backend``; None for ``none``. ``gain_db`` None is automatic gain.
    ``sample_rate`` is the IQ rate of the rtl_tcp backend (rtl_fm picks its own)."""
    if backend == "none":
        return None
    if backend == "rtl_fm":
        return RtlFmReceiver(gain_db=gain_db, ppm=ppm)
    if backend == "rtl_tcp":
        host, port = parse_address(rtl_tcp_address)
        return RtlTcpReceiver(host, port, sample_rate=sample_rate, gain_db=gain_db, ppm=ppm)
    raise ValueError(f"unknown fm.backend {backend!r}; expected one of {', '.join(BACKENDS)}")
