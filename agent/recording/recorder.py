"""The recorder thread: what the card played, downmixed, resampled to 12 kHz and encoded into
segments of the rolling store.

The recorder process's reader (agent.recording.worker) hands over each period that left
the card with its frame index through :meth:`Recorder.offer`, which never blocks: when the
bounded queue is full the period is dropped and counted. The recorder thread takes what
queued up every ``BATCH_S``. Frame indices place every period on the card's time line: a
hole in them (an underrun, where the card played silence, or a dropped period) is
recorded as silence, so sample ``k`` of a segment is always ``start + k / RATE``; a jump
backwards or of more than ``_MAX_FILL_S`` (the output was reopened) closes the segment and
starts anew.

An encoder or disk failure raises ``recording_failed``, drops the open segment and tries
again ``_RETRY_S`` of audio later; the fault clears when a segment is stored again.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

from agent.playout.voice import BYTES_PER_FRAME
from agent.recording.index import RATE, Segment
from agent.recording.store import SegmentStore, open_encoder
from drivers.dsp import StreamingResampler, kaiser_lowpass
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

SEGMENT_S = 60.0
QUEUE_PERIODS = 500  # 5 s of the playout process's 10 ms periods
# The recorder takes what queued up every BATCH_S, contiguous periods as one run: each step
# of the pipeline costs about as much for 10 ms as for 250, so a turn a second took 0.45 to
# 0.52 % of a core where four took 0.70 % (bench_recording).
BATCH_S = 1.0
_MAX_FILL_S = 5.0
_RETRY_S = 5.0
# The anti-alias (or, from a card slower than RATE, anti-image) filter, relative to the
# slower of the two rates: flat to 4.5 kHz at 12 kHz; what lies between 6 and 7.5 kHz
# folds into the band above 4.5 kHz, which the filter already rolls off.
_PASSBAND = 0.375
_ATTENUATION_DB = 50.0
_MAX_UP = 160  # 11.025 -> 12 kHz; every usual card rate resamples exactly within it
_FAILURES = (sf.SoundFileError, OSError, RuntimeError)

Samples = npt.NDArray[np.float32]


class Faults(Protocol):
    """Where ``recording_failed`` is raised and cleared: the agent's FaultRegistry, or the
    recorder process's reports to the agent (agent.recording.worker)."""

    def raise_(self, code: str, message: str) -> None: ...

    def clear(self, code: str) -> None: ...


def resampling_ratio(rate: int) -> Fraction:
    """RATE / ``rate`` as up / down. A rate no card uses (up over _MAX_UP) is approximated:
    its samples are then spaced off by at most about 1e-4, and each segment's start is
    still taken from the card's own time line."""
    exact = Fraction(RATE, rate)
    if exact.numerator <= _MAX_UP:
        return exact
    return 1 / Fraction(rate, RATE).limit_denominator(_MAX_UP)


def _lowpass(rate: int, up: int) -> Samples:
    """The filter at ``rate`` * ``up``, where the resampler applies it, scaled by ``up``
    for the gain its zero stuffing loses."""
    band = min(rate, RATE)
    taps = kaiser_lowpass(rate * up, _PASSBAND * band, (1 - _PASSBAND) * band,
                          _ATTENUATION_DB)
    scaled: Samples = taps * np.float32(up)
    return scaled


def _resampler(rate: int) -> StreamingResampler:
    """The filter and resampler from a card at ``rate`` to RATE."""
    ratio = resampling_ratio(rate)
    return StreamingResampler(_lowpass(rate, ratio.numerator), ratio.numerator,
                              ratio.denominator)


def filter_delay_s(rate: int) -> float:
    """How long before the first frame of a run its first recorded sample is centred: half
    the filter's length."""
    return -_resampler(rate).input_position(0) / rate


class Recorder:
    def __init__(self, store: SegmentStore, faults: Faults, rate: int,
                 frame_time: Callable[[int], float], *, on_drop: Callable[[], None],
                 on_turn: Callable[[], None] = lambda: None,
                 queue_periods: int = QUEUE_PERIODS, segment_s: float = SEGMENT_S,
                 batch_s: float = BATCH_S) -> None:
        """``on_turn`` is called by the recorder thread after each batch: it is alive."""
        self.store = store
        self._faults = faults
        self._rate = rate
        self._frame_time = frame_time
        self._on_drop = on_drop
        self._on_turn = on_turn
        self._queue: queue.Queue[tuple[int, bytes]] = queue.Queue(queue_periods)
        self._batch_s = batch_s
        self._segment_samples = round(segment_s * RATE)
        self._max_fill = round(_MAX_FILL_S * rate)
        ratio = resampling_ratio(rate)
        self._step = ratio.denominator / ratio.numerator  # input frames per output sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # periods the queue had no room for (incremented by the writer)
        # --- owned by the recorder thread ---
        self._expected: int | None = None  # index of the next frame, None: no run yet
        self._run_start = 0  # index of the run's first frame
        self._resampler = _resampler(rate)  # restarted at each run's first frame
        self._encoder: sf.SoundFile | None = None
        self._open_start: float | None = None
        self._open_samples = 0
        self._skip = 0  # frames to let pass unrecorded after a failure

    # --- the writer's side (the reader of the record pipe) ---------------------------------
    def offer(self, index: int, frames: bytes) -> None:
        """Queue a period that frame ``index`` starts; never blocks."""
        try:
            self._queue.put_nowait((index, frames))
        except queue.Full:
            self.dropped += 1
            self._on_drop()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = NamedThread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Record what is queued, close the open segment, and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("recorder thread did not stop within %.1f s", timeout)

    # --- the recorder thread -----------------------------------------------------------
    def _run(self) -> None:
        self._recover()
        while True:
            stopping = self._stop.wait(self._batch_s)
            for index, frames in self._queued_runs():
                try:
                    self._take(index, frames)
                except _FAILURES as exc:
                    self._fail(exc)
            self._on_turn()
            if stopping:
                break
        try:
            self._close_segment()
        except _FAILURES as exc:
            self._fail(exc)

    def _queued_runs(self) -> Iterator[tuple[int, bytes]]:
        """What is queued, each run of contiguous periods joined: (first index, frames)."""
        parts: list[bytes] = []
        first = following = 0
        while True:
            try:
                index, frames = self._queue.get_nowait()
            except queue.Empty:
                break
            if parts and index != following:
                yield first, b"".join(parts)
                parts = []
            if not parts:
                first = index
            parts.append(frames)
            following = index + len(frames) // BYTES_PER_FRAME
        if parts:
            yield first, b"".join(parts)

    def _recover(self) -> None:
        try:
            for partial in self.store.load():
                segment = self.store.repair(partial)
                log.info("recording segment %s left open by a crash: %s", partial.name,
                         "nothing decodable, dropped" if segment is None
                         else f"repaired, {segment.samples / RATE:.1f} s kept")
        except _FAILURES as exc:
            self._fail(exc)

    def _take(self, index: int, frames: bytes) -> None:
        count = len(frames) // BYTES_PER_FRAME
        if self._skip > 0:
            self._skip -= count
            return
        if self._expected is not None and index != self._expected:
            gap = index - self._expected
            if 0 < gap <= self._max_fill:
                self._feed(np.zeros(gap, np.float32))
            else:
                self._close_segment()
                self._expected = None
        if self._expected is None:
            self._expected = self._run_start = index
            self._resampler.restart()
        pcm = np.frombuffer(frames, dtype="<i2", count=count * 2).reshape(-1, 2)
        mono = np.add(pcm[:, 0], pcm[:, 1], dtype=np.float32)
        mono *= np.float32(0.5 / 32768)
        self._feed(mono)

    def _feed(self, mono: Samples) -> None:
        """Filter and resample frames that start at ``self._expected``; encode them."""
        assert self._expected is not None
        first = self._resampler.next_output
        out = self._resampler.process(mono)
        if out.size:
            self._encode(out, self._run_start + self._resampler.input_position(first))
        self._expected += len(mono)

    def _encode(self, samples: Samples, first_position: float) -> None:
        """Encode output samples, the first centred on input frame ``first_position`` (a
        fraction); a segment ends after exactly ``segment_s``, the next one starts with
        the rest."""
        while samples.size:
            if self._encoder is None:
                whole = math.floor(first_position)
                start = self._frame_time(whole) + (first_position - whole) / self._rate
                self._encoder = open_encoder(self.store.partial_path(start))
                self._open_start, self._open_samples = start, 0
            part = samples[:self._segment_samples - self._open_samples]
            self._encoder.write(part)
            self._open_samples += len(part)
            if self._open_samples >= self._segment_samples:
                self._close_segment()
            samples = samples[len(part):]
            first_position += len(part) * self._step

    def _close_segment(self) -> Segment | None:
        encoder, start = self._encoder, self._open_start
        if encoder is None or start is None:
            return None
        self._encoder = None
        encoder.close()
        segment = self.store.add(self.store.partial_path(start), start, self._open_samples)
        self._open_start = None
        self._faults.clear("recording_failed")
        return segment

    def _fail(self, exc: BaseException) -> None:
        log.error("off-air recording failed: %s", exc)
        self._faults.raise_("recording_failed", f"off-air recording failed: {exc}"[:300])
        encoder, start = self._encoder, self._open_start
        self._encoder, self._open_start, self._expected = None, None, None
        if encoder is not None:
            try:
                encoder.close()
            except _FAILURES:
                log.debug("closing the failed encoder failed too", exc_info=True)
        if start is not None:
            self.store.partial_path(start).unlink(missing_ok=True)
        self._skip = round(_RETRY_S * self._rate)
