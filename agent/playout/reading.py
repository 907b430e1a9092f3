"""How the playout engine reads a voice's PCM: whole frames for the general path (mixed in
float32), and the steady path's periods, scaled several at a time from what a
PeekableSource shows ahead."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.playout.voice import BYTES_PER_FRAME, Voice

# A voice from a PeekableSource that plays steady is scaled this much at a time and aired a
# period at a time from there: a thread woken every period pays some 10 us for each numpy
# call, and three of them once in 100 ms instead of every 10 ms period saved about a
# quarter of its work. Each period is still read from the source as it airs: a playout
# process that dies has taken no more of it than it played.
STEADY_AHEAD_S = 0.100

Block = npt.NDArray[np.float32]
S16LE = np.dtype("<i2")  # built once: a dtype given as a string is parsed on every call


def read(voice: Voice, frames: int) -> bytes:
    """Up to ``frames`` whole frames of ``voice``; fewer when its source is short. What the
    steady path scaled ahead no longer follows what is left to read."""
    voice.ahead = b""
    voice.ahead_at = 0
    want = frames * BYTES_PER_FRAME - len(voice.carry)
    data = voice.carry + (voice.source.read(want) if want > 0 else b"")
    usable = len(data) - len(data) % BYTES_PER_FRAME
    voice.carry = data[usable:]
    return data[:usable]


def pull(voice: Voice, frames: int) -> Block:
    """Up to ``frames`` frames of ``voice`` as float32 (n, 2); fewer when its source is
    short."""
    pcm = np.frombuffer(read(voice, frames), dtype=S16LE).astype(np.float32)
    return pcm.reshape(-1, 2)


class SteadyReader:
    """The steady path's reads, for periods of up to ``period`` frames: the same samples
    as the general path's, float32 times the gain truncated into int16 (a gain of at most
    1 keeps every sample in range)."""

    def __init__(self, period: int, period_s: float) -> None:
        self._ahead_periods = max(1, round(STEADY_AHEAD_S / period_s))
        self._out = np.zeros(self._ahead_periods * period * 2, dtype=S16LE)

    def next_period(self, voice: Voice, frames: int) -> bytes | None:
        """The voice's next ``frames`` frames times its applied gain, from Voice.ahead
        (peeked at and scaled up to STEADY_AHEAD_S at a time) or read and scaled alone.
        None: not a whole period, left unread."""
        size = frames * BYTES_PER_FRAME
        if voice.ahead_at + size <= len(voice.ahead) or self._scale_ahead(voice, size):
            data = voice.source.read(size)
            if len(data) < size:  # closed under it: the general path tells what became of it
                voice.carry, voice.ahead, voice.ahead_at = data, b"", 0
                return None
            at = voice.ahead_at
            voice.ahead_at = at + size
            return voice.ahead[at:at + size]
        data = read(voice, frames)
        if len(data) < size:  # short or ending: events to tell
            voice.carry = data + voice.carry
            return None
        return self._scaled(data, voice.applied_gain)

    def _scale_ahead(self, voice: Voice, size: int) -> bool:
        """Peeks at the next STEADY_AHEAD_S of the voice's source, whole periods of
        ``size`` bytes, into Voice.ahead, scaled. False: the source cannot be peeked at,
        or holds less than a period."""
        if voice.carry or voice.peekable is None:
            return False
        data = voice.peekable.peek(self._ahead_periods * size)
        whole = len(data) - len(data) % size
        if not whole:
            return False
        voice.ahead, voice.ahead_at = self._scaled(data[:whole], voice.applied_gain), 0
        return True

    def _scaled(self, data: bytes, gain: float) -> bytes:
        """``data`` times ``gain``, in three numpy calls."""
        scaled = self._out[:len(data) // S16LE.itemsize]
        np.multiply(np.frombuffer(data, dtype=S16LE), np.float32(gain), out=scaled,
                    casting="unsafe")
        return scaled.tobytes()
