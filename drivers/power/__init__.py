"""Mains sense backends, chosen by `power.backend` (config.md, hil.md)."""

from __future__ import annotations

from pathlib import Path

from drivers.power.base import MainsSensor, PowerSettings
from drivers.registry import backend_class

__all__ = ["BACKENDS", "MainsSensor", "open_mains_sensor"]

BACKENDS = {
    "gpio": ("drivers.power.gpio", "GpioMainsSensor"),
    "sim": ("drivers.power.sim", "SimMainsSensor"),
    "none": ("drivers.power.none", "NoMainsSensor"),
}


def open_mains_sensor(backend: str, *, state_dir: Path, chip: str, line: int,
                      active_high: bool) -> MainsSensor:
    cls = backend_class("power backend", BACKENDS, backend, MainsSensor)
    return cls.from_settings(PowerSettings(state_dir, chip, line, active_high))
