"""Mixers, chosen by the `audio.mixer` config section (config.md)."""

from __future__ import annotations

from collections.abc import Mapping

from drivers.mixer.base import Mixer

__all__ = ["Mixer", "MixerError", "open_mixer"]


class MixerError(RuntimeError):
    """The hardware mixer control cannot be opened or set."""


def open_mixer(mixer_cfg: Mapping[str, object] | None) -> Mixer:
    """``None`` → software gain; ``{card: int, control: str}`` → that ALSA mixer control.
    alsaaudio is only imported for a hardware mixer."""
    if mixer_cfg is None:
        from drivers.mixer.software import SoftwareMixer

        return SoftwareMixer()
    card, control = mixer_cfg.get("card"), mixer_cfg.get("control")
    if not isinstance(card, int) or isinstance(card, bool) or not isinstance(control, str):
        raise ValueError(f"audio.mixer needs {{card: <int>, control: <name>}}, got {mixer_cfg!r}")
    from drivers.mixer.alsa import AlsaMixer

    return AlsaMixer(card, control)
