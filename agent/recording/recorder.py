"""The recorder thread: what the card played, downmixed, decimated and encoded into
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
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from agent.playout.voice import BYTES_PER_FRAME
from agent.recording.index import RATE, Segment
from agent.recording.store import SegmentStore, open_encoder
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

SEGMENT_S = 60.0
QUEUE_PERIODS = 250  # 2.5 s of the playout process's 10 ms periods
# The recorder takes what queued up every BATCH_S, contiguous periods as one run: each step
# of the pipeline costs about as much for 10 ms as for 250 (bench_recording).
BATCH_S = 0.25
_MAX_FILL_S = 5.0
_RETRY_S = 5.0
_TAPS = 63  # anti-alias filter; its delay, (_TAPS - 1) / 2 input frames, is compensated
_FAILURES = (sf.SoundFileError, OSError, RuntimeError)

Samples = npt.NDArray[np.float32]


class Faults(Protocol):
    """Where ``recording_failed`` is raised and cleared: the agent's FaultRegistry, or the
    recorder process's reports to the agent (agent.recording.worker)."""

    def raise_(self, code: str, message: str) -> None: ...

    def clear(self, code: str) -> None: ...


def _lowpass(rate_in: int) -> Samples:
    """A windowed-sinc low-pass below half of ``RATE``, unity gain at DC."""
    cutoff = 0.45 * RATE / rate_in
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    taps = np.sinc(2 * cutoff * n) * np.blackman(_TAPS)
    normalized: Samples = (taps / taps.sum()).astype(np.float32)
    return normalized


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
        self._taps = _lowpass(rate)
        self._step = rate / RATE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # periods the queue had no room for (incremented by the writer)
        # --- owned by the recorder thread ---
        self._expected: int | None = None  # index of the next frame, None: no run yet
        self._history = np.zeros(_TAPS - 1, np.float32)
        self._phase = 0.0  # offset of the next output sample from the next input frame
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
            self._expected = index
            self._history[:] = 0.0
            self._phase = 0.0
        pcm = np.frombuffer(frames, dtype="<i2", count=count * 2).reshape(-1, 2)
        mono = np.add(pcm[:, 0], pcm[:, 1], dtype=np.float32)
        mono *= np.float32(0.5 / 32768)
        self._feed(mono)

    def _feed(self, mono: Samples) -> None:
        """Filter and decimate frames that start at ``self._expected``; encode them."""
        assert self._expected is not None
        buffer = np.concatenate((self._history, mono))
        self._history = buffer[-(_TAPS - 1):]
        n = len(mono)
        positions = np.arange(self._phase, n, self._step)
        if self._step.is_integer() and self._phase.is_integer():
            # Only the samples kept are filtered: each one's window of input by the taps
            # (what np.convolve would give there, in a quarter of the work at 48 kHz).
            windows = sliding_window_view(buffer, _TAPS)[int(self._phase)::int(self._step)]
            out = windows @ self._taps[::-1]
        else:
            filtered = np.convolve(buffer, self._taps, mode="valid")
            out = np.interp(positions, np.arange(n), filtered).astype(np.float32)
        if out.size:
            self._encode(out, self._expected + float(positions[0]))
            self._phase = float(positions[-1]) + self._step - n
        else:
            self._phase -= n
        self._expected += n

    def _encode(self, samples: Samples, first_position: float) -> None:
        """Encode output samples, the first at input position ``first_position``; a
        segment ends after exactly ``segment_s``, the next one starts with the rest."""
        while samples.size:
            if self._encoder is None:
                whole = math.floor(first_position)
                delay = (_TAPS - 1) / 2
                start = self._frame_time(whole) + (first_position - whole - delay) / self._rate
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
