"""A tee on the sound card's feed: every write goes to the real output unchanged, then
the same frames, with the index of their first frame, go to the recorder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from drivers.audio.base import AudioOutput


class RecordingTap(AudioOutput):
    """Wraps an AudioOutput for the playout engine. ``offer(index, frames)`` must never
    block (Recorder.offer drops when its queue is full); it gets only frames the device
    accepted, so a failed write is not recorded as aired."""

    def __init__(self, inner: AudioOutput, offer: Callable[[int, bytes], None]) -> None:
        super().__init__(inner.rate)
        self.inner = inner
        self.channels = inner.channels
        self.sample_width = inner.sample_width
        self._offer = offer

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
        self._offer(index, frames if isinstance(frames, bytes) else bytes(frames))
        return index

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
        self.inner.close()
