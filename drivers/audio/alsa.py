"""`alsa:<pcm name>`: a real sound card, through alsa-lib (drivers.audio.libasound).

Frames are numbered from 0 at open. Which frame leaves the card when is estimated, not
measured at the DAC:

- the stream starts on the first write (ALSA's default start threshold is one frame), so
  frame 0 is anchored at the wall time of the first write;
- about once a second the anchor is refreshed from ``snd_pcm_htimestamp``: the kernel's
  timestamp of the last hardware-pointer update and the frames still queued at that
  instant (``buffer_size - avail``), which tracks the card's crystal against the system
  clock. Codec and amplifier latency after the DMA buffer (well under a millisecond on the
  usual I2S and USB codecs) is not included;
- after an underrun (``write`` returns ``-EPIPE``; the stream is prepared again) the
  frames the card would have played since it ran dry count as lost and the numbering
  moves on by that much, so ``next_frame_index`` still maps to wall time.

The PCM is opened non-blocking, so ``write`` can honour its timeout by polling the PCM's
descriptors instead of sleeping inside ``snd_pcm_writei``. Its buffer holds BUFFER_S, room
for the engine's deep lead, of which it gives back what the card has not begun to play
(``snd_pcm_rewind``, AudioOutput.rewind).
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Self

from drivers.audio.base import AudioOutput, AudioOutputError
from drivers.audio.libasound import AlsaError, FormatRefused, PlaybackPcm
from drivers.clock import Clock, SystemClock

HTIMESTAMP_INTERVAL_S = 1.0
PERIOD_FRAMES = 480
BUFFER_S = 0.200


class AlsaOutput(AudioOutput):
    can_rewind = True

    def __init__(
        self,
        pcm_name: str,
        rate: int,
        *,
        period_frames: int = PERIOD_FRAMES,
        buffer_s: float = BUFFER_S,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate)
        self.pcm_name = pcm_name
        self._period_frames = period_frames
        self._asked_buffer_frames = round(buffer_s * rate)
        self._clock: Clock = clock or SystemClock()
        self._frame_bytes = self.channels * self.sample_width
        self._pcm: PlaybackPcm | None = None
        self._buffer_frames = 0
        self._lock = threading.Lock()
        self._next_index = 0
        self._anchor: tuple[int, float] | None = None  # (frame index, wall time it leaves)
        self._next_refresh = 0.0
        self._underrun_frames = 0

    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        return cls(target, rate)

    def _name(self) -> str:
        return f"alsa:{self.pcm_name}"

    def open(self) -> None:
        try:
            pcm = PlaybackPcm(self.pcm_name, self.rate, self.channels, self._period_frames,
                              self._asked_buffer_frames)
        except AlsaError as error:
            hint = (f"The device cannot play {self.rate} Hz stereo s16le as it is: use a "
                    "plug: PCM or set audio.rate.") if isinstance(error, FormatRefused) \
                else "List the sound cards with `aplay -l` and the PCM names with `aplay -L`."
            raise AudioOutputError(
                f"{self._name()}: cannot open the playback device {self.pcm_name!r}: {error}. "
                + hint) from error
        try:
            self._buffer_frames = pcm.buffer_frames()
        except AlsaError as error:
            pcm.close()
            raise AudioOutputError(f"{self._name()}: {error}") from error
        with self._lock:
            self._pcm = pcm
            self._next_index = 0
            self._anchor = None
            self._underrun_frames = 0

    def _open_pcm(self) -> PlaybackPcm:
        if self._pcm is None:
            raise AudioOutputError(f"{self._name()} is not open")
        return self._pcm

    def write(self, frames: bytes, timeout: float) -> int:
        if len(frames) % self._frame_bytes:
            raise ValueError(f"{len(frames)} bytes is not a whole number of s16le stereo frames")
        pcm = self._open_pcm()
        data = memoryview(frames)
        deadline = time.monotonic() + timeout
        first: int | None = None
        while data:
            started_at = self._clock.now()
            try:
                result = pcm.write(data)
            except AlsaError as error:
                raise AudioOutputError(f"{self._name()}: write failed: {error}") from error
            if result == -errno.EPIPE:
                self._count_underrun()
                continue
            if result > 0:
                landed = self._advance(result, started_at)
                first = landed if first is None else first
                data = data[result * self._frame_bytes:]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AudioOutputError(
                    f"{self._name()}: the device accepted nothing for {timeout:.3f} s"
                )
            pcm.wait_writable(min(remaining, self._period_frames / self.rate))
        self._refresh_anchor(pcm)
        return self.next_frame_index() if first is None else first

    def _advance(self, written: int, started_at: float) -> int:
        """Count ``written`` frames; returns the index of the first."""
        with self._lock:
            if self._anchor is None:
                self._anchor = (self._next_index, started_at)
            first = self._next_index
            self._next_index += written
            return first

    @property
    def underrun_frames(self) -> int:
        with self._lock:
            return self._underrun_frames

    def _count_underrun(self) -> None:
        """The card ran dry at frame_time(next_index) and restarts with the next write."""
        now = self._clock.now()
        with self._lock:
            if self._anchor is not None:
                ran_dry_at = self._frame_time_locked(self._next_index)
                lost = max(0, round((now - ran_dry_at) * self.rate))
                self._next_index += lost
                self._underrun_frames += lost
            self._anchor = None

    def _refresh_anchor(self, pcm: PlaybackPcm) -> None:
        if time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + HTIMESTAMP_INTERVAL_S
        try:
            stamp, available = pcm.htimestamp()
        except AlsaError:
            return  # keep the anchor; the next write tells whether the card failed
        if stamp == 0.0:
            return  # the driver gives no timestamps; keep the first-write anchor
        queued = max(0, self._buffer_frames - available)
        with self._lock:
            self._anchor = (self._next_index - queued, stamp)

    def next_frame_index(self) -> int:
        with self._lock:
            return self._next_index

    def frame_time(self, index: int) -> float:
        with self._lock:
            return self._frame_time_locked(index)

    def _frame_time_locked(self, index: int) -> float:
        if self._anchor is None:  # not started: the next frame would leave now
            return self._clock.now() + (index - self._next_index) / self.rate
        anchor_index, anchor_time = self._anchor
        return anchor_time + (index - anchor_index) / self.rate

    def playhead(self) -> int:
        """By the anchor: the kernel's timestamp of the card's last pointer update, about
        once a second (a driver may move its pointer once per hardware period)."""
        with self._lock:
            if self._anchor is None:  # not started: nothing is playing
                return self._next_index
            anchor_index, anchor_time = self._anchor
            return anchor_index + int((self._clock.now() - anchor_time) * self.rate)

    def buffered_frames(self) -> int:
        try:
            available = self._open_pcm().avail()
        except AlsaError as error:
            raise AudioOutputError(f"{self._name()}: {error}") from error
        if available < 0:  # -EPIPE: ran dry
            return 0
        return max(0, self._buffer_frames - available)

    def rewindable(self) -> int:
        """What the card says it can give back, never more than was written after its
        playhead (alsa-lib's null PCM, which plays nothing, would give back its whole
        buffer)."""
        try:
            return max(0, min(self._open_pcm().rewindable(),
                              self.next_frame_index() - self.playhead()))
        except AlsaError as error:
            raise AudioOutputError(f"{self._name()}: {error}") from error

    def rewind(self, frames: int) -> bool:
        if frames > self.rewindable():
            return False
        pcm = self._open_pcm()
        with self._lock:
            if frames <= 0 or not pcm.rewind(frames):
                return frames == 0
            self._next_index -= frames
            return True

    def close(self) -> None:
        with self._lock:
            pcm, self._pcm = self._pcm, None
        if pcm is not None:
            pcm.close()
