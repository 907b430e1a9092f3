"""Amplifier power backends, chosen by `amplifier.backend` (config.md)."""

from __future__ import annotations

from pathlib import Path

from drivers.amplifier.base import Amplifier, AmplifierError, AmplifierSettings
from drivers.registry import backend_class

__all__ = ["BACKENDS", "Amplifier", "AmplifierError", "open_amplifier"]

BACKENDS = {
    "gpio": ("drivers.amplifier.gpio", "GpioAmplifier"),
    "sim": ("drivers.amplifier.sim", "SimAmplifier"),
    "none": ("drivers.amplifier.none", "NoAmplifier"),
}


def open_amplifier(
    backend: str, *, state_dir: Path, chip: str, line: int, active_high: bool
) -> Amplifier:
    """Build the backend and put the amplifier in its initial state (off)."""
    cls = backend_class("amplifier backend", BACKENDS, backend, Amplifier)
    return cls.from_settings(AmplifierSettings(state_dir, chip, line, active_high))
