"""The audio output interface: a sound card that consumes interleaved s16le frames."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import Self

log = logging.getLogger(__name__)

# Real-time priority of the threads that feed the sound card (SCHED_FIFO, as audio servers
# use): above ordinary work, so a busy machine delays the card's feed less. Where the
# process may not (no CAP_SYS_NICE / RLIMIT_RTPRIO), the thread stays at normal priority.
AUDIO_RT_PRIORITY = 20


def request_realtime(priority: int = AUDIO_RT_PRIORITY) -> bool:
    """Give the calling thread SCHED_FIFO ``priority``; False when not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError, AttributeError) as exc:
        log.info("no real-time priority for the audio threads (%s); running at normal "
                 "priority", exc)
        return False
    return True


class AudioOutputError(RuntimeError):
    """The device failed (unplugged, cannot open, write error)."""


class AudioOutput(ABC):
    """A device consuming frames at ``rate`` in real time.

    Frames are numbered from 0 at :meth:`open`. The device keeps its own clock: when the
    writer is late it plays silence (an underrun) and the frame numbering moves on, so the
    next written frame always gets :meth:`next_frame_index`.
    """

    channels = 2
    sample_width = 2
    can_rewind = False  # whether :meth:`rewind` may take anything back

    def __init__(self, rate: int) -> None:
        self.rate = rate

    @classmethod
    @abstractmethod
    def from_target(cls, target: str, rate: int) -> Self:
        """Build (not yet open) the output for the part of ``audio.output`` after the
        colon: a PCM name, a path."""

    @abstractmethod
    def open(self) -> None: ...

    def resume(self) -> None:
        """Open again after the previous writer died without closing (a restarted playout
        process). A device that keeps its own clock through that (the virtual card of
        hil.md) continues its numbering and capture; any other opens afresh."""
        self.open()

    @abstractmethod
    def write(self, frames: bytes, timeout: float) -> int:
        """Queue interleaved s16le frames; blocks (up to ``timeout`` s) while the device
        buffer is full. Returns the index its first frame got: :meth:`next_frame_index`
        as it was just before, unless the device ran dry since (then later by the silence
        it played). Raises AudioOutputError on device failure."""

    def rewindable(self) -> int:
        """Frames written and not yet played that :meth:`rewind` could take back now."""
        return 0

    def rewind(self, frames: int) -> bool:
        """Take back the last ``frames`` written, not yet played: the next write
        replaces them, its first frame getting the index the first of them had. All of
        them, or (False) none."""
        return False

    @abstractmethod
    def next_frame_index(self) -> int:
        """The index the next written frame will get."""

    @abstractmethod
    def frame_time(self, index: int) -> float:
        """Wall-clock Unix time at which frame ``index`` leaves the device."""

    @abstractmethod
    def buffered_frames(self) -> int:
        """Frames written but not yet played."""

    def playhead(self) -> int:
        """The index of the frame leaving the device now, by its own clock. A device may
        count what it holds (:meth:`buffered_frames`) in steps, a tick or a hardware period
        at a time; its clock places the playhead between them. By default, the count."""
        return self.next_frame_index() - self.buffered_frames()

    @property
    @abstractmethod
    def underrun_frames(self) -> int:
        """Frames the device played as silence since :meth:`open` because the writer was
        late: what the listeners heard as gaps."""

    @abstractmethod
    def close(self) -> None: ...
