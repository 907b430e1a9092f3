"""`alsa:<pcm name>`: a real sound card through pyalsaaudio (0.11).

Frames are numbered from 0 at open. Which frame leaves the card when is estimated, not
measured at the DAC:

- the stream starts on the first write (ALSA's default start threshold is one frame), so
  frame 0 is anchored at the wall time of the first write;
- about once a second the anchor is refreshed from ``PCM.htimestamp()``: the kernel's
  timestamp of the last hardware-pointer update and the frames still queued at that
  instant (``buffer_size - avail``), which tracks the card's crystal against the system
  clock. Codec and amplifier latency after the DMA buffer (well under a millisecond on the
  usual I2S and USB codecs) is not included;
- after an underrun (``write`` returns ``-EPIPE``; pyalsaaudio has already re-prepared the
  stream) the frames the card would have played since it ran dry count as lost and the
  numbering moves on by that much, so ``next_frame_index`` still maps to wall time.

The PCM is opened non-blocking, so ``write`` can honour its timeout by polling the PCM's
descriptors instead of sleeping inside ``snd_pcm_writei``.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from typing import Self

import alsaaudio

from drivers.audio.base import AudioOutput, AudioOutputError
from drivers.clock import Clock, SystemClock

HTIMESTAMP_INTERVAL_S = 1.0


class AlsaOutput(AudioOutput):
    def __init__(
        self,
        pcm_name: str,
        rate: int,
        *,
        period_frames: int = 480,
        periods: int = 4,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate)
        self.pcm_name = pcm_name
        self._period_frames = period_frames
        self._periods = periods
        self._clock: Clock = clock or SystemClock()
        self._frame_bytes = self.channels * self.sample_width
        self._pcm: alsaaudio.PCM | None = None
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
            pcm = alsaaudio.PCM(
                type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK, device=self.pcm_name,
                channels=self.channels, rate=self.rate, format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self._period_frames, periods=self._periods,
            )
        except alsaaudio.ALSAAudioError as error:
            raise AudioOutputError(
                f"{self._name()}: cannot open the playback device {self.pcm_name!r}: {error}. "
                "List the sound cards with `aplay -l` and the PCM names with `aplay -L`."
            ) from error
        info = pcm.info()
        if info["rate"] != self.rate or info["channels"] != self.channels:
            pcm.close()
            raise AudioOutputError(
                f"{self._name()}: the device runs at {info['rate']} Hz, {info['channels']} "
                f"channels, not {self.rate} Hz stereo; use a plug: PCM or set audio.rate"
            )
        pcm.set_tstamp_mode(alsaaudio.PCM_TSTAMP_ENABLE)
        self._buffer_frames = int(info["buffer_size"])
        with self._lock:
            self._pcm = pcm
            self._next_index = 0
            self._anchor = None
            self._underrun_frames = 0

    def _open_pcm(self) -> alsaaudio.PCM:
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
            except alsaaudio.ALSAAudioError as error:
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
            self._wait_writable(pcm, min(remaining, self._period_frames / self.rate))
        self._refresh_anchor(pcm)
        return self.next_frame_index() if first is None else first

    def _wait_writable(self, pcm: alsaaudio.PCM, seconds: float) -> None:
        poller = select.poll()
        for fd, events in pcm.polldescriptors():
            poller.register(fd, events)
        poller.poll(max(1, round(seconds * 1000)))

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

    def _refresh_anchor(self, pcm: alsaaudio.PCM) -> None:
        if time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + HTIMESTAMP_INTERVAL_S
        seconds, nanoseconds, available = pcm.htimestamp()
        if seconds == 0 and nanoseconds == 0:
            return  # the driver gives no timestamps; keep the first-write anchor
        queued = max(0, self._buffer_frames - available)
        with self._lock:
            self._anchor = (self._next_index - queued, seconds + nanoseconds / 1e9)

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
        available = int(self._open_pcm().avail())
        if available < 0:  # -EPIPE: ran dry
            return 0
        return max(0, self._buffer_frames - available)

    def close(self) -> None:
        with self._lock:
            pcm, self._pcm = self._pcm, None
        if pcm is not None:
            pcm.close()
