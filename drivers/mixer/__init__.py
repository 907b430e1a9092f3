"""Mixers, chosen by the `audio.mixer` config section (config.md): null is software gain,
``{card, control}`` an ALSA mixer control."""

from __future__ import annotations

from collections.abc import Mapping

from drivers.mixer.base import Mixer, MixerControl, MixerError
from drivers.registry import backend_class

__all__ = ["BACKENDS", "Mixer", "MixerError", "open_mixer"]

BACKENDS = {
    "software": ("drivers.mixer.software", "SoftwareMixer"),
    "alsa": ("drivers.mixer.alsa", "AlsaMixer"),
}


def open_mixer(mixer_cfg: Mapping[str, object] | None) -> Mixer:
    """``None`` → software gain; ``{card: int, control: str}`` → that ALSA mixer control.
    alsaaudio is only imported for a hardware mixer."""
    control = None
    if mixer_cfg is not None:
        card, name = mixer_cfg.get("card"), mixer_cfg.get("control")
        if not isinstance(card, int) or isinstance(card, bool) or not isinstance(name, str):
            raise ValueError(
                f"audio.mixer needs {{card: <int>, control: <name>}}, got {mixer_cfg!r}")
        control = MixerControl(card, name)
    backend = "software" if control is None else "alsa"
    return backend_class("mixer", BACKENDS, backend, Mixer).from_control(control)
