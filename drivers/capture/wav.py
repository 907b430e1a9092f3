"""`wav:<path>`: the virtual capture card of hil.md.

From :meth:`open` it "captures" the 48 kHz WAV prepared by a test in real time, paced by
the monotonic clock like an ADC: sample ``n`` arrives at ``start_epoch + n / rate``, in
blocks of ``block_s``, and silence follows the file's end. ``<path>.json`` records
``start_epoch`` (with the rate, channels and format, like the clocked sink's sidecar), so
a test knows when each sample of its file was captured. The file is read whole at open: it
is a test's few seconds of sound. Mono files are captured on both channels.
"""

from __future__ import annotations

import json
import os
import time
import wave
from pathlib import Path
from typing import Self

import numpy as np

from drivers.capture.base import CaptureError, LineCapture
from drivers.clock import Clock, SystemClock

BLOCK_S = 0.005


class WavCapture(LineCapture):
    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        return cls(Path(target), rate)

    def __init__(self, path: Path, rate: int, clock: Clock | None = None,
                 block_s: float = BLOCK_S) -> None:
        super().__init__(rate)
        self.path = path
        self.sidecar_path = path.with_name(path.name + ".json")
        self._clock: Clock = clock or SystemClock()
        self._block = max(1, round(block_s * rate))
        self._frame_bytes = self.channels * self.sample_width
        self._pcm = b""
        self._mono_start: float | None = None
        self._delivered = 0  # frames handed out so far

    def open(self) -> None:
        self._pcm = self._load()
        self._mono_start = self._clock.monotonic()
        start_epoch = self._clock.now()
        self._delivered = 0
        temporary = self.sidecar_path.with_name(f".{self.sidecar_path.name}.tmp")
        try:
            temporary.write_text(json.dumps({"start_epoch": start_epoch, "rate": self.rate,
                                             "channels": self.channels, "format": "s16le"}),
                                 encoding="utf-8")
            os.replace(temporary, self.sidecar_path)
        except OSError as error:
            raise CaptureError(f"wav:{self.path}: cannot write the sidecar "
                               f"{self.sidecar_path}: {error}") from error

    def _load(self) -> bytes:
        try:
            with wave.open(str(self.path), "rb") as w:
                rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                data = w.readframes(w.getnframes())
        except (OSError, EOFError, wave.Error) as error:
            raise CaptureError(f"wav:{self.path}: cannot read the input: {error}") from error
        if rate != self.rate or width != self.sample_width or channels not in (1, 2):
            raise CaptureError(f"wav:{self.path}: expected 16-bit mono or stereo at "
                               f"{self.rate} Hz, got {width * 8}-bit, {channels} channels at "
                               f"{rate} Hz")
        if channels == 1:
            mono = np.frombuffer(data, dtype="<i2")
            data = np.repeat(mono, 2).astype("<i2").tobytes()
        return data

    def read(self, timeout: float) -> bytes:
        if self._mono_start is None:
            raise CaptureError(f"wav:{self.path} is not open")
        deadline = self._clock.monotonic() + timeout
        while True:
            now = self._clock.monotonic()
            due = int((now - self._mono_start) * self.rate)
            ready = (due - self._delivered) // self._block * self._block
            if ready > 0:
                break
            next_block_at = self._mono_start + (self._delivered + self._block) / self.rate
            if next_block_at > deadline:
                time.sleep(max(0.0, deadline - now))
                return b""
            time.sleep(max(0.0, next_block_at - now))
        begin = self._delivered * self._frame_bytes
        self._delivered += ready
        chunk = self._pcm[begin:begin + ready * self._frame_bytes]
        return chunk + bytes(ready * self._frame_bytes - len(chunk))

    def close(self) -> None:
        self._mono_start = None
        self._pcm = b""
