"""PCM sources the engine can play besides decoded items."""

from __future__ import annotations

import array
import math
import sys
from collections.abc import Iterable

from agent.playout.decoder import Decoded


class BufferSource:
    """PCM held in memory (the chime, test tones), a PeekableSource."""

    def __init__(self, pcm: bytes) -> None:
        self._pcm = pcm
        self._pos = 0

    def read(self, max_bytes: int) -> bytes:
        chunk = self._pcm[self._pos:self._pos + max_bytes]
        self._pos += len(chunk)
        return chunk

    def peek(self, max_bytes: int) -> bytes:
        return self._pcm[self._pos:self._pos + max_bytes]

    @property
    def finished(self) -> bool:
        return self._pos >= len(self._pcm)


class StreamSource:
    """A decoded stream as an engine source."""

    def __init__(self, stream: Decoded) -> None:
        self.stream = stream

    def read(self, max_bytes: int) -> bytes:
        return self.stream.read(max_bytes)

    @property
    def finished(self) -> bool:
        return self.stream.finished


def _stereo_s16le(wave: Iterable[float]) -> bytes:
    """Both channels of interleaved s16le PCM from one wave in sample units (truncated)."""
    mono = array.array("h", map(int, wave))
    stereo = array.array("h", bytes(4 * len(mono)))
    stereo[0::2] = mono
    stereo[1::2] = mono
    if sys.byteorder == "big":
        stereo.byteswap()
    return stereo.tobytes()


def tone(rate: int, seconds: float, frequency: float = 1000.0, dbfs: float = -6.0) -> bytes:
    """A stereo sine at ``dbfs`` peak level."""
    step, peak = 2 * math.pi * frequency / rate, 32767 * 10 ** (dbfs / 20)
    return _stereo_s16le(peak * math.sin(step * i) for i in range(int(rate * seconds)))


def builtin_chime(rate: int) -> bytes:
    """A two-note attention chime ("ding-dong", E5 then C5), about 1.4 s."""
    scale = 32767 * 10 ** (-6 / 20) / 1.3

    def note(freq: float, length: float) -> Iterable[float]:
        for i in range(int(rate * length)):
            t = i / rate
            envelope = math.exp(-t * 4.0) * min(t / 0.004, 1.0)
            wave = math.sin(2 * math.pi * freq * t) + 0.3 * math.sin(2 * math.pi * 2 * freq * t)
            yield wave * envelope * scale

    return _stereo_s16le([*note(659.25, 0.6), *note(523.25, 0.8)])
