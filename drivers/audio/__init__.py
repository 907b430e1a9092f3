"""Audio outputs, chosen by the `audio.output` config string `<backend>:<target>`
(config.md, hil.md)."""

from __future__ import annotations

from drivers.audio.base import AudioOutput, AudioOutputError
from drivers.registry import backend_class

__all__ = ["BACKENDS", "AudioOutput", "AudioOutputError", "open_output"]

BACKENDS = {
    "alsa": ("drivers.audio.alsa", "AlsaOutput"),  # alsa:<pcm name>
    "wav": ("drivers.audio.wav", "ClockedWavSink"),  # wav:<path>
}
TARGETS = {"alsa": "PCM name", "wav": "path"}  # what follows the colon


def open_output(spec: str, rate: int) -> AudioOutput:
    """Build (not yet open) the output named by ``spec``; alsaaudio is only imported for
    ``alsa:``."""
    backend, _, target = spec.partition(":")
    if backend not in BACKENDS:
        raise ValueError(f"unknown audio output {spec!r}; expected one of "
                         f"{', '.join(f'{name}:<{TARGETS[name].lower()}>' for name in BACKENDS)}")
    if not target:
        raise ValueError(f"audio output {spec!r} needs a {TARGETS[backend]}")
    return backend_class("audio output", BACKENDS, backend, AudioOutput).from_target(target, rate)
