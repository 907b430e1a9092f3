"""Line inputs (drivers/capture/base.py LineCapture), chosen by the `line_in.input` config
string `<backend>:<target>` (config.md, hil.md). ``line_in.input: null`` is no line input at
all: the agent then builds no capture (Status ``line_in`` null), as ``fm.backend: none``
builds no tuner."""

from __future__ import annotations

from drivers.capture.base import CaptureError, LineCapture
from drivers.registry import backend_for_spec

__all__ = ["BACKENDS", "CaptureError", "LineCapture", "open_capture"]

BACKENDS = {
    "alsa": ("drivers.capture.alsa", "AlsaCapture"),  # alsa:<pcm name>
    "wav": ("drivers.capture.wav", "WavCapture"),  # wav:<path>, the virtual capture card
}
TARGETS = {"alsa": "PCM name", "wav": "path"}  # what follows the colon


def open_capture(spec: str, rate: int) -> LineCapture:
    """Build (not yet open) the line input named by ``spec``; alsaaudio is only imported
    for ``alsa:``."""
    cls, target = backend_for_spec("line input", BACKENDS, TARGETS, spec, LineCapture)
    return cls.from_target(target, rate)
