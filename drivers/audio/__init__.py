"""Audio outputs, chosen by the `audio.output` config string `<backend>:<target>`
(config.md, hil.md)."""

from __future__ import annotations

from drivers.audio.base import AudioOutput, AudioOutputError
from drivers.registry import backend_for_spec

__all__ = ["BACKENDS", "AudioOutput", "AudioOutputError", "open_output"]

BACKENDS = {
    "alsa": ("drivers.audio.alsa", "AlsaOutput"),  # alsa:<pcm name>
    "wav": ("drivers.audio.wav", "ClockedWavSink"),  # wav:<path>
}
TARGETS = {"alsa": "PCM name", "wav": "path"}  # what follows the colon


def open_output(spec: str, rate: int) -> AudioOutput:
    """Build (not yet open) the output named by ``spec``; alsaaudio is only imported for
    ``alsa:``."""
    cls, target = backend_for_spec("audio output", BACKENDS, TARGETS, spec, AudioOutput)
    return cls.from_target(target, rate)
