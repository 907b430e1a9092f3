"""The PCM jitter buffer between a thread that receives audio and the real-time reader
that plays it: the FM relay's and the line input's in the agent, each relay's pipe in the
playout process."""

from __future__ import annotations

import threading

from agent.playout.voice import BYTES_PER_FRAME


class PcmJitterBuffer:
    """Bounded FIFO of whole frames between the receiving thread and the real-time
    reader.

    Output starts once ``prefill_bytes`` are queued and restarts from there after an
    underrun: what came in beyond the prefill meanwhile (a sender catching up after a
    stall) is dropped, oldest first, or the relay would stay that much later from then on.
    On overflow (the sender's clock, a dongle's or a capture card's, faster than the sound
    card) the oldest audio is dropped back to the prefill level too. So latency stays
    between prefill and capacity, and returns to the prefill after every underrun.
    """

    def __init__(self, capacity_bytes: int, prefill_bytes: int) -> None:
        self._capacity = capacity_bytes
        self._prefill = prefill_bytes
        self._data = bytearray()
        self._buffering = True
        self._delivered_bytes = 0
        self._lock = threading.Lock()

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._data += pcm
            if len(self._data) > self._capacity:
                del self._data[: len(self._data) - self._prefill]

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes: queued audio, padded with silence when short."""
        with self._lock:
            if self._buffering:
                if len(self._data) < self._prefill:
                    return bytes(size)
                del self._data[: len(self._data) - self._prefill]
            self._buffering = len(self._data) < size
            chunk = bytes(self._data[:size])
            del self._data[:size]
            self._delivered_bytes += len(chunk)
        return chunk + bytes(size - len(chunk))

    def take(self, max_bytes: int) -> bytes:
        """Queued audio, whole frames, at most ``max_bytes``, never padded: for a reader
        that buffers on its own side (agent.playout.feed)."""
        with self._lock:
            size = min(len(self._data), max_bytes) // BYTES_PER_FRAME * BYTES_PER_FRAME
            chunk = bytes(self._data[:size])
            del self._data[:size]
            self._delivered_bytes += size
        return chunk

    @property
    def sizes(self) -> tuple[int, int]:
        """(capacity, prefill) in bytes: what a reader on the other side keeps."""
        return self._capacity, self._prefill

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._buffering = True

    @property
    def queued_bytes(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def delivered_bytes(self) -> int:
        """Queued audio handed to the reader so far (silence padding not counted)."""
        with self._lock:
            return self._delivered_bytes
