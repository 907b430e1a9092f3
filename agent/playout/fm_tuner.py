"""The supervised FM relay: one thread ("fm") owns the receiver and fills a small jitter
buffer that the playout engine drains without ever blocking.

Supervision:
- no dongle / no rtl_tcp server -> fault ``sdr_missing``; retried with exponential backoff.
- no samples for ``stall_after_s`` (or the receiver reports a stall) -> fault ``sdr_stalled``,
  a USB reset of the dongle if one was given, and a restart with exponential backoff; the
  fault clears when PCM flows again.
- channel power below ``squelch_dbfs`` -> silence at once, fault ``fm_signal_lost`` after
  ``lost_after_s``; audio returns at ``squelch_dbfs + SQUELCH_HYSTERESIS_DB`` and the fault
  clears after the station has been back for ``lost_after_s``. A receiver that cannot
  measure the level (rtl_fm: signal_dbfs None) is never squelched.

Ownership: a playback takes a :class:`TunerLease` with :meth:`FmTuner.acquire`. Leases on
the station the tuner is on share it (back-to-back programs of one station relay without a
retune); a lease on another station retunes, and the older leases then read silence and
count nothing. Releasing a lease ends only that lease: the tuner stops when the last lease
of its station is released.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.playout.jitter_buffer import PcmJitterBuffer
from agent.playout.voice import BYTES_PER_FRAME
from drivers.sdr.base import FmReceiver, SdrError, SdrMissing
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

RECEIVER_RATE = 48_000  # FmReceiver delivers 48 kHz s16le stereo
READ_TIMEOUT_S = 0.1
SQUELCH_HYSTERESIS_DB = 2.0
JOIN_TIMEOUT_S = 5.0  # covers a receiver start in progress (rtl_fm waits up to 3 s)
USB_RESET_INTERVAL_S = 60.0
RELAY_FAULTS = ("sdr_missing", "sdr_stalled", "fm_signal_lost")


class Tunable(Protocol):
    """The tuner a lease reads: :class:`FmTuner`, or the in-memory one of the simulation
    (``agent/playout/memory_tuner.py``)."""

    @property
    def frequency_mhz(self) -> float | None: ...

    @property
    def relayed_frames(self) -> int: ...

    def read(self, frames: int) -> bytes: ...

    def take(self, max_bytes: int) -> bytes: ...

    @property
    def jitter_sizes(self) -> tuple[int, int]: ...

    def release(self, lease: TunerLease) -> None: ...


class TunerLease:
    """One playback's use of the tuner, and the engine source of its voice: it reads the
    station while the tuner is on its frequency and counts the station's own audio it
    delivered (squelch and outage silence are not counted)."""

    live = True  # paced by the card: read only while on air (agent.playout.feed)
    wakes_feeder = False  # 300 ms of prefill: the feeder's 5 ms turns are soon enough

    def __init__(self, tuner: Tunable, frequency_mhz: float) -> None:
        self._tuner = tuner
        self.frequency_mhz = frequency_mhz
        self.relayed_frames = 0
        self.lead_frames = 0  # asked for before the station's first audio (tuning, prefill)
        self.released = False

    @property
    def current(self) -> bool:
        return not self.released and self._tuner.frequency_mhz == self.frequency_mhz

    def read(self, max_bytes: int) -> bytes:
        if not self.current:
            return b""
        before = self._tuner.relayed_frames
        data = self._tuner.read(max_bytes // BYTES_PER_FRAME)
        delivered = self._tuner.relayed_frames - before
        if self.relayed_frames == 0 and delivered == 0:
            self.lead_frames += max_bytes // BYTES_PER_FRAME
        self.relayed_frames += delivered
        return data

    def drain(self, max_bytes: int) -> bytes:
        """The station's audio received so far, unpadded (agent.playout.feed); what was
        relayed is then counted by the playout process."""
        return self._tuner.take(max_bytes) if self.current else b""

    @property
    def jitter_sizes(self) -> tuple[int, int]:
        return self._tuner.jitter_sizes

    @property
    def finished(self) -> bool:
        return False

    @property
    def carried_sound(self) -> bool:
        """The station's own audio was relayed (squelch and outage silence do not count)."""
        return self.relayed_frames > 0

    def release(self) -> None:
        self._tuner.release(self)


class FmTuner:
    def __init__(
        self,
        receiver_factory: Callable[[], FmReceiver],
        faults: FaultRegistry,
        clock: Clock,
        squelch_dbfs: float,
        rate: int = RECEIVER_RATE,
        *,
        usb_reset: Callable[[], object] | None = None,
        # A relay may run a few hundred ms behind the station without anyone noticing, and
        # that margin rides out a stall of the agent's interpreter (the fm thread and the
        # feeder are not real-time): 80 ms left the relay of CI runs full of gaps.
        buffer_s: float = 0.6,
        prefill_s: float = 0.3,
        stall_after_s: float = 2.0,
        lost_after_s: float = 1.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if rate != RECEIVER_RATE:
            raise ValueError(f"FM receivers deliver {RECEIVER_RATE} Hz, not {rate}")
        self._factory = receiver_factory
        self._faults = faults
        self._clock = clock
        self._squelch_dbfs = squelch_dbfs
        self._usb_reset = usb_reset
        self._stall_after_s = stall_after_s
        self._lost_after_s = lost_after_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._buffer = PcmJitterBuffer(_frames_bytes(rate, buffer_s),
                                       _frames_bytes(rate, prefill_s))
        self._tuning = threading.Lock()  # the station and its buffer change together
        self._generation = 0  # counts tunings: a block of an older one is not relayed
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._frequency_mhz: float | None = None
        self._signal_dbfs: float | None = None
        self._receiving = False
        self._gate_open = False
        self._gate_changed_at = 0.0
        self._lost = False
        self._last_usb_reset: float | None = None
        self._leases: list[TunerLease] = []

    # -- engine side (any thread, never blocks on the receiver) ---------------------------

    def read(self, frames: int) -> bytes:
        return self._buffer.read(frames * BYTES_PER_FRAME)

    def take(self, max_bytes: int) -> bytes:
        return self._buffer.take(max_bytes)

    @property
    def jitter_sizes(self) -> tuple[int, int]:
        return self._buffer.sizes

    @property
    def relayed_frames(self) -> int:
        """Frames of the station's audio read so far, ever (squelch and outage silence not
        counted): a reader compares two values to know whether it relayed anything."""
        return self._buffer.delivered_bytes // BYTES_PER_FRAME

    @property
    def frequency_mhz(self) -> float | None:
        return self._frequency_mhz

    @property
    def signal_dbfs(self) -> float | None:
        return self._signal_dbfs

    @property
    def signal_ok(self) -> bool:
        """PCM is flowing and the station is above squelch."""
        return self.running and self._receiving and self._gate_open

    @property
    def running(self) -> bool:
        """A station is wanted: the fm thread relays it, or retries until it can."""
        return self._frequency_mhz is not None

    # -- control (never waits for the receiver) -------------------------------------------

    def acquire(self, frequency_mhz: float) -> TunerLease:
        """A lease on ``frequency_mhz``: shares the tuner if it is on that station already,
        retunes it otherwise."""
        if self._frequency_mhz != frequency_mhz:
            self.tune(frequency_mhz)
        lease = TunerLease(self, frequency_mhz)
        self._leases = [held for held in self._leases if held.current] + [lease]
        return lease

    def release(self, lease: TunerLease) -> None:
        """Ends ``lease``; the tuner goes idle when no lease of its station remains."""
        lease.released = True
        self._leases = [held for held in self._leases if held.current]
        if not self._leases and self._frequency_mhz == lease.frequency_mhz:
            self.tune(None)

    def busy_elsewhere(self, frequency_mhz: float) -> bool:
        """Another station is leased: acquiring this one would retune under it."""
        return any(held.current and held.frequency_mhz != frequency_mhz
                   for held in self._leases)

    def tune(self, frequency_mhz: float | None) -> None:
        """Relay ``frequency_mhz`` (None: go idle). The fm thread restarts its receiver
        on the new station within one read; from now on nothing of the old station is
        queued."""
        with self._tuning:
            self._frequency_mhz = frequency_mhz
            self._generation += 1
            self._buffer.clear()
        self._wake.set()
        if self._thread is None and frequency_mhz is not None:
            self._thread = NamedThread(target=self._run, name="fm", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ends the relay and its thread (at shutdown); its faults no longer apply."""
        self.tune(None)
        self._closing = True
        self._wake.set()  # again: the idle thread may have spent tune()'s wake already
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.error("fm thread did not stop within %.0f s", JOIN_TIMEOUT_S)
        self._closing = False
        self._forget_station()

    # -- the fm thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            with self._tuning:
                generation, frequency_mhz = self._generation, self._frequency_mhz
            if frequency_mhz is None:
                self._wake.wait()
                self._wake.clear()  # what woke it is read at the top of the loop
                continue
            # Read above: a wake from before is spent (it would cut the first backoff
            # short); a retune after the read changes the generation, which ends the
            # session below within one read.
            self._wake.clear()
            backoff_s = self._backoff_initial_s
            while self._current(generation):
                if self._session(self._factory(), frequency_mhz, generation):
                    backoff_s = self._backoff_initial_s
                if self._wake.wait(backoff_s):  # cut short by a retune or a stop
                    self._wake.clear()
                backoff_s = min(backoff_s * 2, self._backoff_max_s)
            self._forget_station()

    def _current(self, generation: int) -> bool:
        return not self._closing and generation == self._generation

    def _forget_station(self) -> None:
        """The relay of a station ended (retuned, idle or stopped): what it measured and
        the faults it raised no longer apply."""
        self._signal_dbfs = None
        self._lost = False
        for code in RELAY_FAULTS:
            self._faults.clear(code)

    def _session(self, receiver: FmReceiver, frequency_mhz: float, generation: int) -> bool:
        """Runs one receiver until it fails, the relay stops or the station changes; True
        if it delivered PCM."""
        delivered = False
        try:
            receiver.start(frequency_mhz)
            self._faults.clear("sdr_missing")
            self._gate_open = False
            self._gate_changed_at = last_pcm_at = self._clock.monotonic()
            while self._current(generation):
                pcm = receiver.read(READ_TIMEOUT_S)
                now = self._clock.monotonic()
                if pcm:
                    last_pcm_at, delivered, self._receiving = now, True, True
                    self._faults.clear("sdr_stalled")
                    self._on_pcm(pcm, receiver.signal_dbfs, now, generation)
                elif now - last_pcm_at >= self._stall_after_s:
                    silent_s = now - last_pcm_at
                    self._faults.raise_("sdr_stalled",
                                        f"no samples from the receiver for {silent_s:.1f} s")
                    self._reset_usb(now)
                    return delivered
        except SdrMissing as exc:
            self._faults.raise_("sdr_missing", str(exc))
        except SdrError as exc:
            self._faults.raise_("sdr_stalled", str(exc))
        except Exception as exc:  # a receiver bug must not end the relay for good
            log.exception("FM receiver failed")
            self._faults.raise_("sdr_stalled", f"receiver failed: {exc!r}")
        finally:
            self._receiving = False
            with self._tuning:
                if generation == self._generation:
                    self._buffer.clear()
            receiver.stop()
        return delivered

    def _on_pcm(self, pcm: bytes, level_dbfs: float | None, now: float,
                generation: int) -> None:
        self._signal_dbfs = level_dbfs
        gate_open = self._gate_open
        if level_dbfs is None:
            gate_open = True
        elif gate_open and level_dbfs < self._squelch_dbfs:
            gate_open = False
        elif not gate_open and level_dbfs >= self._squelch_dbfs + SQUELCH_HYSTERESIS_DB:
            gate_open = True
        if gate_open != self._gate_open:
            self._gate_open, self._gate_changed_at = gate_open, now
        settled = now - self._gate_changed_at >= self._lost_after_s
        if not gate_open and settled and not self._lost:
            self._lost = True
            self._faults.raise_("fm_signal_lost",
                                f"{self._frequency_mhz} MHz at {level_dbfs:.1f} dBFS, below the "
                                f"squelch of {self._squelch_dbfs:.1f} dBFS")
        elif gate_open and settled and self._lost:
            self._lost = False
            self._faults.clear("fm_signal_lost")
        with self._tuning:
            if generation != self._generation:
                return  # retuned while this block was on its way
            if gate_open:
                self._buffer.write(pcm)
            else:
                self._buffer.clear()

    def _reset_usb(self, now: float) -> None:
        if self._usb_reset is None:
            return
        if self._last_usb_reset is not None and now - self._last_usb_reset < USB_RESET_INTERVAL_S:
            return
        self._last_usb_reset = now
        log.warning("FM receiver stalled: resetting the dongle's USB port: %s", self._usb_reset())


def _frames_bytes(rate: int, seconds: float) -> int:
    return round(rate * seconds) * BYTES_PER_FRAME
