"""PCM sources the engine can play besides decoded items."""

from __future__ import annotations

import numpy as np

from agent.playout.decoder import Decoded


class BufferSource:
    """PCM held in memory (the chime, test tones)."""

    def __init__(self, pcm: bytes) -> None:
        self._pcm = pcm
        self._pos = 0

    def read(self, max_bytes: int) -> bytes:
        chunk = self._pcm[self._pos:self._pos + max_bytes]
        self._pos += len(chunk)
        return chunk

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


def tone(rate: int, seconds: float, frequency: float = 1000.0, dbfs: float = -6.0) -> bytes:
    """A stereo sine at ``dbfs`` peak level."""
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    wave = np.sin(2 * np.pi * frequency * t) * (32767 * 10 ** (dbfs / 20))
    return np.repeat(wave.astype("<i2")[:, None], 2, axis=1).tobytes()


def builtin_chime(rate: int) -> bytes:
    """A two-note attention chime ("ding-dong", E5 then C5), about 1.4 s."""
    out = []
    for freq, length in ((659.25, 0.6), (523.25, 0.8)):
        t = np.arange(int(rate * length), dtype=np.float64) / rate
        envelope = np.exp(-t * 4.0) * np.minimum(t / 0.004, 1.0)
        note = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 2 * freq * t)
        out.append(note * envelope * (32767 * 10 ** (-6 / 20) / 1.3))
    wave = np.concatenate(out).astype("<i2")
    return np.repeat(wave[:, None], 2, axis=1).tobytes()
