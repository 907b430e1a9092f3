"""Audio outputs, chosen by the `audio.output` config string (config.md, hil.md)."""

from __future__ import annotations

from pathlib import Path

from drivers.audio.base import AudioOutput, AudioOutputError

__all__ = ["BACKENDS", "AudioOutput", "AudioOutputError", "open_output"]

BACKENDS = ("alsa:<pcm name>", "wav:<path>")


def open_output(spec: str, rate: int) -> AudioOutput:
    """Build (not yet open) the output named by ``spec``. Backends are imported lazily, so
    that alsaaudio is only needed for ``alsa:``."""
    backend, _, target = spec.partition(":")
    if backend not in ("alsa", "wav"):
        raise ValueError(f"unknown audio output {spec!r}; expected one of {', '.join(BACKENDS)}")
    if not target:
        raise ValueError(
            f"audio output {spec!r} needs a {'path' if backend == 'wav' else 'PCM name'}"
        )
    if backend == "wav":
        from drivers.audio.wav import ClockedWavSink

        return ClockedWavSink(Path(target), rate)
    from drivers.audio.alsa import AlsaOutput

    return AlsaOutput(target, rate)
