"""Amplifier power backends, chosen by `amplifier.backend` (config.md)."""

from __future__ import annotations

from pathlib import Path

from drivers.amplifier.base import Amplifier, AmplifierError

__all__ = ["BACKENDS", "Amplifier", "AmplifierError", "open_amplifier"]

BACKENDS = ("gpio", "sim", "none")


def open_amplifier(
    backend: str, *, state_dir: Path, chip: str, line: int, active_high: bool
) -> Amplifier:
    """Build the backend and put the amplifier in its initial state (off)."""
    if backend == "gpio":
        from drivers.amplifier.gpio import GpioAmplifier

        return GpioAmplifier(chip, line, active_high)
    if backend == "sim":
        from drivers.amplifier.sim import SimAmplifier

        return SimAmplifier(state_dir)
    if backend == "none":
        from drivers.amplifier.none import NoAmplifier

        return NoAmplifier()
    expected = ", ".join(BACKENDS)
    raise ValueError(f"unknown amplifier backend {backend!r}; expected one of {expected}")
