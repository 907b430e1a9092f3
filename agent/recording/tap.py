"""A tee on the sound card's feed: every write goes to the real output unchanged, and
the same frames, with the index of their first frame, go to the recorder once the card has
played them: until then the card may give them back (AudioOutput.rewind) and they never
air."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Self

from drivers.audio.base import AudioOutput

# A call on the engine's thread just after its sleep costs some 20 µs more than warm: what
# the card played goes to the recorder every third write (45 ms), not after every one.
OFFER_EVERY_WRITES = 3


class RecordingTap(AudioOutput):
    """Wraps an AudioOutput for the playout engine. ``offer(index, frames)`` must never
    block (Recorder.offer drops when its queue is full); it gets only frames the device
    accepted, so a failed write is not recorded as aired."""

    def __init__(self, inner: AudioOutput, offer: Callable[[int, bytes], None]) -> None:
        super().__init__(inner.rate)
        self.inner = inner
        self.channels = inner.channels
        self.sample_width = inner.sample_width
        self.can_rewind = inner.can_rewind
        self._frame_bytes = self.channels * self.sample_width
        self._offer = offer
        self._held: deque[tuple[int, bytes]] = deque()  # written, not yet played
        self._writes = 0

    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        raise TypeError("a RecordingTap wraps an output already built; it has no target")

    def open(self) -> None:
        self.inner.open()

    def resume(self) -> None:
        self.inner.resume()

    def write(self, frames: bytes, timeout: float) -> int:
        index = self.inner.write(frames, timeout)
        # bytes are immutable: the recorder may keep them as they are; anything else
        # could be reused by the writer, so it is copied.
        self._held.append((index, frames if isinstance(frames, bytes) else bytes(frames)))
        self._writes += 1
        if self._writes % OFFER_EVERY_WRITES == 0:
            self._offer_played()
        return index

    def _offer_played(self) -> None:
        playhead = self.inner.playhead()
        held = self._held
        while held and held[0][0] + len(held[0][1]) // self._frame_bytes <= playhead:
            self._offer(*held.popleft())

    def rewindable(self) -> int:
        return self.inner.rewindable()

    def rewind(self, frames: int) -> bool:
        if not self.inner.rewind(frames):
            return False
        end, frame_bytes = self.inner.next_frame_index(), self._frame_bytes
        while self._held and (last := self._held[-1])[0] + len(last[1]) // frame_bytes > end:
            self._held.pop()
            if last[0] < end:
                self._held.append((last[0], last[1][:(end - last[0]) * frame_bytes]))
        return True

    def next_frame_index(self) -> int:
        return self.inner.next_frame_index()

    def frame_time(self, index: int) -> float:
        return self.inner.frame_time(index)

    def buffered_frames(self) -> int:
        return self.inner.buffered_frames()

    def playhead(self) -> int:
        return self.inner.playhead()

    @property
    def underrun_frames(self) -> int:
        return self.inner.underrun_frames

    def close(self) -> None:
        self._offer_played()
        self._held.clear()  # the card drops what it has not played
        self.inner.close()
