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
# quarter of its work. Each period is taken from the source only once the card has played
# it (aired.UnreadPeriods).
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

    def peek_period(self, voice: Voice, frames: int, skip: int) -> bytes | None:
        """The ``frames`` frames of the voice's source after its first ``skip`` bytes
        (aired, not yet taken from it: aired.UnreadPeriods) times its applied gain, from
        Voice.ahead, peeked at and scaled up to STEADY_AHEAD_S at a time. Nothing is read
        from the source. None: it cannot be peeked at, or holds less than a period."""
        size = frames * BYTES_PER_FRAME
        if voice.ahead_at + size > len(voice.ahead) \
                and not self._scale_ahead(voice, size, skip):
            return None
        at = voice.ahead_at
        voice.ahead_at = at + size
        return voice.ahead[at:at + size]

    def read_period(self, voice: Voice, frames: int) -> bytes | None:
        """The voice's next ``frames`` frames, read from its source, times its applied
        gain. None: not a whole period, left unread."""
        data = read(voice, frames)
        if len(data) < frames * BYTES_PER_FRAME:  # short or ending: events to tell
            voice.carry = data + voice.carry
            return None
        return self._scaled(data, voice.applied_gain)

    def _scale_ahead(self, voice: Voice, size: int, skip: int) -> bool:
        """Peeks at the STEADY_AHEAD_S of the voice's source after its first ``skip``
        bytes, whole periods of ``size`` bytes, into Voice.ahead, scaled. False: the
        source cannot be peeked at, or holds less than a period there."""
        if voice.carry or voice.peekable is None:
            return False
        data = voice.peekable.peek(skip + self._ahead_periods * size)[skip:]
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


def gain_curve(voice: Voice, frames: int, fade_in_total: int) -> Block:
    """The gains of the voice's next ``frames`` frames: ramped over them from its applied
    gain to its target, times its fade in (of ``fade_in_total`` frames) where it has not
    ended."""
    start, target = voice.applied_gain, voice.gain
    if start == target:
        gains = np.full(frames, target, dtype=np.float32)
    else:
        gains = np.linspace(start, target, frames, dtype=np.float32)
        voice.applied_gain = target
    if voice.fade_in_left > 0:
        done = fade_in_total - voice.fade_in_left
        ramp = np.minimum((np.arange(done, done + frames, dtype=np.float32) + 1)
                          / fade_in_total, 1.0)
        gains *= ramp
        voice.fade_in_left = max(voice.fade_in_left - frames, 0)
    return gains
