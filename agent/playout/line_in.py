"""The line input (the commune office's microphone or mixer): one thread ("line-in") owns
the capture, meters every block, runs VOX on it and keeps the newest few milliseconds in a
small buffer that the playout engine drains without ever blocking.

Latency: people hear themselves from the horns, so capture-to-card must stay within
50 ms. The buffer holds at most ``buffer_s`` and, when it overflows (nobody reads, or the
capture clock runs faster than the card's), drops the oldest audio back to ``prefill_s``;
so on air the input runs ``prefill_s`` behind the capture, plus the playout process's own
15-27 ms of card buffering (bench/bench_line_in.py measures it). Each block captured while
the input is on air wakes the playout feeder (``on_captured``), so that it crosses to the
playout process at once instead of at the feeder's next 5 ms turn.

Supervision: an input that cannot be opened, fails, or delivers nothing for
``stall_after_s`` raises fault ``line_in_failed`` (VOX is off meanwhile) and is reopened
with exponential backoff; the fault clears when capture works again.

Ownership: a playback takes a :class:`LineInLease` with :meth:`LineInput.acquire`; the
newest lease owns the input and older ones read nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.control.vox import FLOOR_DBFS, LevelEnvelope, Vox, block_dbfs
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.playout.jitter_buffer import PcmJitterBuffer
from agent.playout.voice import BYTES_PER_FRAME
from drivers.capture import CaptureError, LineCapture
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
JOIN_TIMEOUT_S = 3.0


class LineInLease:
    """One playback's use of the input, and the engine source of its voice. It counts the
    captured frames it delivered, and whether any of them carried sound (louder than
    ``audio.dead_air_dbfs``): a relay of nothing but silence is not a broadcast."""

    live = True  # paced by the card: read only while on air (agent.playout.feed)
    wakes_feeder = True  # each captured block, through LineInput's on_captured

    def __init__(self, line: LineInput) -> None:
        self._line = line
        self.relayed_frames = 0
        self.lead_frames = 0  # asked for before the input's first frame (prefill)
        self.released = False
        self.ended = False
        self._first_read: float | None = None
        self.heard = False

    @property
    def current(self) -> bool:
        return not self.released and self._line.owner is self

    def read(self, max_bytes: int) -> bytes:
        if self.ended or not self.current:
            return b""
        line = self._line
        now = line.clock.monotonic()
        if self._first_read is None:
            self._first_read = now
        before = line.buffer.delivered_bytes
        data = line.buffer.read(max_bytes - max_bytes % BYTES_PER_FRAME)
        delivered = max(0, line.buffer.delivered_bytes - before) // BYTES_PER_FRAME
        if self.relayed_frames == 0 and delivered == 0:
            self.lead_frames += max_bytes // BYTES_PER_FRAME
        self.relayed_frames += delivered
        loud_at = line.last_loud
        if loud_at is not None and loud_at >= self._first_read:
            self.heard = True
        return data

    def drain(self, max_bytes: int) -> bytes:
        """The captured audio so far, unpadded (agent.playout.feed); what was relayed is
        then counted by the playout process."""
        if self.ended or not self.current:
            return b""
        line = self._line
        if self._first_read is None:
            self._first_read = line.clock.monotonic()
        data = line.buffer.take(max_bytes)
        loud_at = line.last_loud
        if loud_at is not None and loud_at >= self._first_read:
            self.heard = True
        return data

    @property
    def jitter_sizes(self) -> tuple[int, int]:
        return self._line.buffer.sizes

    @property
    def finished(self) -> bool:
        """Ended (VOX heard the speaker stop): the engine ends the voice as if its source
        ran out."""
        return self.ended

    @property
    def carried_sound(self) -> bool:
        return self.heard

    def quiet_for(self) -> float:
        """Seconds since the input last carried sound while this lease was reading it."""
        if self._first_read is None:
            return 0.0
        loud_at = self._line.last_loud
        since = self._first_read if loud_at is None else max(loud_at, self._first_read)
        return self._line.clock.monotonic() - since

    def end(self) -> None:
        self.ended = True

    def release(self) -> None:
        self._line.release(self)


class LineInput:
    def __init__(self, capture_factory: Callable[[], LineCapture], faults: FaultRegistry,
                 clock: Clock, *, dead_air_dbfs: float, vox: Vox | None,
                 on_vox: Callable[[bool], None],
                 on_captured: Callable[[], None] = lambda: None, buffer_s: float = 0.030,
                 prefill_s: float = 0.025, stall_after_s: float = 2.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self._factory = capture_factory
        self._faults = faults
        self.clock = clock
        self._dead_air_dbfs = dead_air_dbfs
        self._vox = vox
        self._on_vox = on_vox
        self._on_captured = on_captured
        self._buffer_s = buffer_s
        self._prefill_s = prefill_s
        self._stall_after_s = stall_after_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self.buffer = PcmJitterBuffer(0, 0)  # sized at the first open, from the rate
        self.owner: LineInLease | None = None
        self.level_dbfs: float | None = None  # None while the input cannot be read
        self.last_loud: float | None = None  # monotonic time of the last block with sound
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control side ---------------------------------------------------------------------
    def acquire(self) -> LineInLease:
        """A lease on the input; the newest owns it."""
        lease = LineInLease(self)
        self.owner = lease
        return lease

    def release(self, lease: LineInLease) -> None:
        lease.released = True
        if self.owner is lease:
            self.owner = None

    def status(self) -> dict[str, float | None]:
        level = self.level_dbfs
        return {"level_dbfs": None if level is None else round(level, 1)}

    def start(self) -> None:
        self._stop.clear()
        self._thread = NamedThread(target=self._run, name="line-in", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("line-in thread did not stop within %.0f s", timeout)
        self._thread = None

    # -- the line-in thread -----------------------------------------------------------------
    def _run(self) -> None:
        backoff_s = self._backoff_initial_s
        while not self._stop.is_set():
            if self._session():
                backoff_s = self._backoff_initial_s
            if self._stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, self._backoff_max_s)

    def _session(self) -> bool:
        """Captures until the input fails or the thread stops; True if it delivered."""
        delivered = False
        capture: LineCapture | None = None
        try:
            capture = self._factory()
            capture.open()
            self._faults.clear("line_in_failed")
            frame_bytes = capture.channels * capture.sample_width
            self.buffer = PcmJitterBuffer(round(capture.rate * self._buffer_s) * frame_bytes,
                                          round(capture.rate * self._prefill_s) * frame_bytes)
            delivered = self._capture(capture, frame_bytes)
        except CaptureError as exc:
            log.error("line input: %s", exc)
            self._faults.raise_("line_in_failed", str(exc))
        except Exception as exc:  # a capture bug must not end the line input for good
            log.exception("line input failed")
            self._faults.raise_("line_in_failed", f"capture failed: {exc!r}")
        finally:
            self.level_dbfs = None
            self.buffer.clear()
            if self._vox is not None and self._vox.reset():
                self._on_vox(False)
            if capture is not None:
                capture.close()
        return delivered

    def _capture(self, capture: LineCapture, frame_bytes: int) -> bool:
        envelope = LevelEnvelope()
        frames_seen = 0
        last_block = self.clock.monotonic()
        while not self._stop.is_set():
            block = capture.read(READ_TIMEOUT_S)
            now = self.clock.monotonic()
            if not block:
                if now - last_block >= self._stall_after_s:
                    raise CaptureError(f"no samples from the line input for "
                                       f"{now - last_block:.1f} s")
                continue
            last_block = now
            self.buffer.write(block)
            if self.owner is not None:
                self._on_captured()
            seconds = len(block) // frame_bytes / capture.rate
            raw = block_dbfs(block)
            if raw > max(self._dead_air_dbfs, FLOOR_DBFS):
                self.last_loud = now
            self.level_dbfs = envelope.update(raw, seconds)
            if self._vox is not None:
                change = self._vox.update(frames_seen / capture.rate, seconds, self.level_dbfs)
                if change is not None:
                    log.info("line input: VOX %s at %.1f dBFS", "on" if change else "off",
                             self.level_dbfs)
                    self._on_vox(change)
            frames_seen += len(block) // frame_bytes
        return frames_seen > 0
