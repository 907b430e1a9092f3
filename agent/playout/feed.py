"""The agent's side of the PCM pipes to the playout process.

Each voice gets a pipe. The feeder thread ("playout-feed") moves PCM from the voice's
source (a decoder, a buffer) into the pipe as far as the pipe has room, so a decoded file
runs up to PIPE_BYTES (about 5 s at 48 kHz) ahead of the card: a stall of the agent's
interpreter shorter than that is never heard. A live source (:class:`LiveSource`: the
tuner, the line input) hands out what it received, as it arrives and from its start on,
and its jitter buffer (prefill, padding, dropping the oldest on overflow) is kept on the
playout process's side, so that the relay is no later on air than in one process; that
process counts what it relayed. The agent keeps its copy of each read end
until the voice ends, so that the PCM not yet played survives a playout process that
died, and the next one continues from it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from agent.playout.voice import BYTES_PER_FRAME, PcmSource, Voice
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20  # the kernel's default pipe-max-size
FEED_INTERVAL_S = 0.005
IDLE_FEED_INTERVAL_S = 0.25  # PlayoutProcess.set_gain wakes the feeder
# A pipe holding less than this is pumped every FEED_INTERVAL_S (so always a pipe kept
# shorter, a metered stream's); one above it can wait IDLE_FEED_INTERVAL_S.
LOW_WATER_S = 0.5
# A live source is drained from this long before its first frame is due.
LIVE_AHEAD_S = 0.030


def open_pipe() -> tuple[int, int]:
    """A PCM pipe (read end, write end), as deep as the system allows; the write end is
    non-blocking."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError as exc:  # above /proc/sys/fs/pipe-max-size for an unprivileged user
        log.info("PCM pipes keep their default size (%s)", exc)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def pipe_fill(fd: int) -> int:
    """Bytes waiting in the pipe of ``fd`` (either end)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


@runtime_checkable
class LiveSource(Protocol):
    """A relay's source (agent.playout.fm_tuner.TunerLease, agent.playout.line_in
    .LineInLease) as the feed drains it."""

    live: bool
    wakes_feeder: bool  # it wakes the feeder for each new block: no need to poll it
    relayed_frames: int  # its own audio that left the card (set from the playout process)
    lead_frames: int  # silence before the first of it

    def drain(self, max_bytes: int) -> bytes: ...

    @property
    def jitter_sizes(self) -> tuple[int, int]: ...

    @property
    def finished(self) -> bool: ...


@dataclass(eq=False)
class VoiceFeed:
    """One voice on its way to the playout process."""

    voice_id: int
    voice: Voice
    read_fd: int
    write_fd: int
    capacity: int  # bytes the pipe may hold
    sent_gain: float
    opens_at: float | None  # wall time from which the source is read; None: not yet
    live: LiveSource | None
    low_water: int  # bytes
    played_base: int = 0  # frames played by playout processes that died since
    underrun_base: int = 0
    relayed_base: int = 0
    carry: bytes = field(default=b"", repr=False)
    # The feeder pumps while the events or control thread may let go of the voice: an fd
    # closed under a write could be reused by the next pipe and get this voice's PCM.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def open(cls, voice_id: int, voice: Voice, rate: int) -> VoiceFeed:
        read_fd, write_fd = open_pipe()
        capacity = int(fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ))
        ahead_s = getattr(voice.source, "max_ahead_s", None)  # a source metered as read
        if isinstance(ahead_s, float):
            capacity = min(capacity, round(ahead_s * rate) * BYTES_PER_FRAME)
        live = voice.source if isinstance(voice.source, LiveSource) else None
        return cls(voice_id, voice, read_fd, write_fd, capacity, voice.gain,
                   None if live else 0.0, live,
                   round(LOW_WATER_S * rate) * BYTES_PER_FRAME)

    def took(self, played: int, underrun: int, relayed: int, lead: int) -> None:
        """What the playout process reports of this voice (since it started it). Counts
        from before the last ones taken change nothing: a dead process's tally, written
        every few periods (host.TALLY_EVERY_PERIODS), can be older than its last status."""
        if self.played_base + played + self.underrun_base + underrun \
                < self.voice.frames_played + self.voice.underrun_frames:
            return
        self.voice.frames_played = self.played_base + played
        self.voice.underrun_frames = self.underrun_base + underrun
        if self.live is not None:
            self.live.relayed_frames = self.relayed_base + relayed
            if not self.relayed_base:
                self.live.lead_frames = lead

    def carry_over(self) -> None:
        """Its playout process died: the next one counts from zero again."""
        self.played_base = self.voice.frames_played
        self.underrun_base = self.voice.underrun_frames
        if self.live is not None:
            self.relayed_base = self.live.relayed_frames

    def opens(self, at: float | None) -> None:
        """The voice is cued to start at ``at`` (wall time; None: now, or it started)."""
        if self.opens_at != 0.0:
            self.opens_at = 0.0 if at is None else at - LIVE_AHEAD_S

    @property
    def source(self) -> PcmSource:
        return self.voice.source

    @property
    def feeding(self) -> bool:
        return self.write_fd >= 0

    def pump(self, now: float) -> bool:
        """Move what fits; at the end of the source, close the pipe (end of file for the
        playout process). Never blocks. Returns whether it wants the next pump within
        FEED_INTERVAL_S: a relay that does not wake the feeder itself, a voice about to
        open, a pipe below its low water."""
        with self._lock:
            if self.write_fd < 0:
                return False
            if self.opens_at is None or now < self.opens_at:
                return True
            self._move()
            if self.write_fd < 0:
                return False
            if self.live is not None:
                return not self.live.wakes_feeder
            return pipe_fill(self.write_fd) < self.low_water

    def _move(self) -> None:
        if not self.carry:
            room = self.capacity - pipe_fill(self.write_fd)
            if room <= 0:
                return
            # All that fits: a pipe above its low water is topped up only every
            # IDLE_FEED_INTERVAL_S.
            self.carry = self.source.read(room) if self.live is None \
                else self.live.drain(room)
        if self.carry:
            try:
                written = os.write(self.write_fd, self.carry)
            except BlockingIOError:
                return
            except BrokenPipeError:  # every read end closed: nobody will play it
                self.close_writer()
                return
            self.carry = self.carry[written:]
        elif self.source.finished:
            self.close_writer()

    def close_writer(self) -> None:
        with self._lock:
            if self.write_fd >= 0:
                os.close(self.write_fd)
                self.write_fd = -1

    def close(self) -> None:
        with self._lock:
            self.close_writer()
            if self.read_fd >= 0:
                os.close(self.read_fd)
                self.read_fd = -1


class Feeder:
    """The "playout-feed" thread: pumps every open feed every FEED_INTERVAL_S, and at once
    when woken (a new cue must not wait); passes on the gain changes of every feed the
    playout process still holds, its pipe closed or not."""

    def __init__(self, feeds: Callable[[], list[VoiceFeed]],
                 on_gain: Callable[[VoiceFeed], None], now: Callable[[], float]) -> None:
        self._feeds = feeds
        self._now = now
        self._on_gain = on_gain
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = NamedThread(target=self._run, name="playout-feed", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = FEED_INTERVAL_S
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            now = self._now()
            soon = False
            for feed in self._feeds():
                try:
                    if feed.voice.gain != feed.sent_gain:
                        feed.sent_gain = feed.voice.gain
                        self._on_gain(feed)
                    soon = feed.pump(now) or soon
                except Exception:  # one source's failure ends its voice, not the feed
                    log.exception("feeding %s failed", feed.voice)
                    feed.close_writer()
            # Files a second or more ahead, or nothing to feed: no need to spin.
            interval = FEED_INTERVAL_S if soon else IDLE_FEED_INTERVAL_S
