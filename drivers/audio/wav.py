"""`wav:<path>`: the virtual sound card of hil.md.

A thread ("wav-dac") consumes frames at exactly the nominal rate, paced by the monotonic
clock like a DAC: frame ``n`` is consumed at ``mono_start + n / rate`` and so left the card
at ``start_epoch + n / rate``. What the writer has not supplied in time is padded with
silence (an underrun, once the writer has begun: like an ALSA card, which starts with
the first write, a new capture's opening silence is no underrun) and the numbering moves
on. Every consumed frame lands at its own
index in the WAV file, whose data chunk is the last chunk so that a reader can take the
data up to the end of the file; the header is rewritten twice a second and on close.
Where the card padded an underrun is appended to ``<path>.underruns``, a line of "first
frame, frames" for each, so that a test can tell the card's silence from the writer's.
What the wav-dac thread has not consumed yet the card gives back on ``rewind``, as an ALSA
card gives back what its DMA has not reached.

The file is written by a second thread ("wav-disk"): a DAC never waits for a disk, and a
write held up by another process's fsync (a download, the state store) would otherwise
stop the clock and be heard as a gap that a real card would not have.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Self

from drivers.audio.base import AudioOutput, AudioOutputError, request_realtime
from drivers.clock import Clock, SystemClock
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

HEADER_BYTES = 44
_RIFF_SIZE_OFFSET = 4
_DATA_SIZE_OFFSET = 40
_MAX_CHUNK_SIZE = 0xFFFF_FFFF  # a WAV size field is 32 bits: about 6.2 h of 48 kHz stereo
# What the card can hold, as an ALSA card's buffer: room for the engine's deep lead.
CAPACITY_S = 0.250


def wav_header(rate: int, channels: int, sample_width: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header (RIFF, fmt, data last)."""
    block_align = channels * sample_width
    data_size = min(data_bytes, _MAX_CHUNK_SIZE - 36)
    return (
        struct.pack("<4sI4s", b"RIFF", 36 + data_size, b"WAVE")
        + struct.pack(
            "<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * block_align, block_align,
            sample_width * 8,
        )
        + struct.pack("<4sI", b"data", data_size)
    )


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_sidecar(path: Path, document: dict[str, object]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temporary, path)


class ClockedWavSink(AudioOutput):
    """Consumes frames in real time into ``path``; see the module docstring and hil.md."""

    can_rewind = True

    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        return cls(Path(target), rate)

    def __init__(
        self,
        path: Path,
        rate: int,
        clock: Clock | None = None,
        *,
        buffer_s: float = CAPACITY_S,
        tick_s: float = 0.010,
        header_interval_s: float = 0.5,
    ) -> None:
        super().__init__(rate)
        self.path, self.sidecar_path, self.underruns_path = self.files_of(path)
        self._clock: Clock = clock or SystemClock()
        self._frame_bytes = self.channels * self.sample_width
        self._capacity_frames = max(1, round(buffer_s * rate))
        self._tick_s = tick_s
        self._header_interval_s = header_interval_s
        self._cond = threading.Condition()
        self._pending = bytearray()  # frames written, not yet consumed
        self._consumed = 0  # frames that left the card, silence padding included
        self._underrun_frames = 0
        self._fed = False  # the writer has begun: from now on, padding is an underrun
        self._to_disk = bytearray()  # consumed, not yet written (under _cond)
        self._spans_to_disk: list[tuple[int, int]] = []  # underruns, not yet written (same)
        self._file_frames = 0  # frames on disk; touched by the wav-disk thread only while it runs
        self._failure: str | None = None
        self._fd = -1
        self._mono_start = 0.0
        self._start_epoch: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._disk_thread: threading.Thread | None = None

    @staticmethod
    def files_of(path: Path) -> tuple[Path, Path, Path]:
        """The capture at ``path`` and the two files beside it: its sidecar and its list of
        underruns."""
        return path, path.with_name(path.name + ".json"), path.with_name(path.name + ".underruns")

    @property
    def underrun_frames(self) -> int:
        """Silent frames the card played because the writer was late."""
        with self._cond:
            return self._underrun_frames

    def open(self) -> None:
        if self._thread is not None:
            raise AudioOutputError(f"wav:{self.path} is already open")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            _write_all(self._fd, wav_header(self.rate, self.channels, self.sample_width, 0))
        except OSError as error:
            self._close_fd()
            message = f"wav:{self.path}: cannot create the capture: {error}"
            raise AudioOutputError(message) from error
        # Sample the two clocks back to back so that frame 0 has one instant in both.
        self._mono_start = self._clock.monotonic()
        start_epoch = self._clock.now()
        try:
            _write_sidecar(self.sidecar_path, {
                "start_epoch": start_epoch, "rate": self.rate,
                "channels": self.channels, "format": "s16le",
            })
            self.underruns_path.write_bytes(b"")
        except OSError as error:
            self._close_fd()
            raise AudioOutputError(
                f"wav:{self.path}: cannot write the sidecar {self.sidecar_path}: {error}"
            ) from error
        self._start(start_epoch, 0, fed=False)

    def resume(self) -> None:
        """The card ran on while nobody fed it: the capture continues at the frame due
        now, the frames in between silent (underrun); without a capture to continue
        (no sidecar, another rate), a new one."""
        if self._thread is not None:
            raise AudioOutputError(f"wav:{self.path} is already open")
        try:
            sidecar = json.loads(self.sidecar_path.read_text(encoding="utf-8"))
            start_epoch = float(sidecar["start_epoch"])
            if sidecar.get("rate") != self.rate:
                raise ValueError(f"the capture is at {sidecar.get('rate')} Hz")
            self._fd = os.open(self.path, os.O_RDWR)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("wav:%s: no capture to continue (%s): starting a new one", self.path,
                        error)
            self.open()
            return
        self._mono_start = self._clock.monotonic()
        now = self._clock.now()
        self._mono_start -= now - start_epoch
        on_disk = max(0, (os.fstat(self._fd).st_size - HEADER_BYTES) // self._frame_bytes)
        due = max(on_disk, int((now - start_epoch) * self.rate))
        try:
            os.ftruncate(self._fd, HEADER_BYTES + due * self._frame_bytes)  # zeros: silence
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as error:
            self._close_fd()
            raise AudioOutputError(f"wav:{self.path}: cannot continue the capture: {error}"
                                   ) from error
        self._start(start_epoch, due, fed=True, silent_frames=due - on_disk)

    def _start(self, start_epoch: float, frame: int, *, fed: bool,
               silent_frames: int = 0) -> None:
        """``fed``: the card was running already (a resumed capture)."""
        with self._cond:
            self._fed = fed
            self._pending.clear()
            self._to_disk.clear()
            self._consumed = frame
            self._underrun_frames = silent_frames
            self._spans_to_disk = [(frame - silent_frames, silent_frames)] if silent_frames \
                else []
            self._failure = None
            self._file_frames = frame
            self._start_epoch = start_epoch
        self._stop.clear()
        self._thread = NamedThread(target=self._run, name="wav-dac", daemon=True)
        self._disk_thread = NamedThread(target=self._write_to_disk, name="wav-disk",
                                        daemon=True)
        self._thread.start()
        self._disk_thread.start()

    def write(self, frames: bytes, timeout: float) -> int:
        if len(frames) % self._frame_bytes:
            raise ValueError(f"{len(frames)} bytes is not a whole number of s16le stereo frames")
        data = memoryview(frames)
        deadline = time.monotonic() + timeout
        first: int | None = None
        with self._cond:
            while data:
                self._check_alive()
                free_bytes = self._capacity_frames * self._frame_bytes - len(self._pending)
                if free_bytes > 0:
                    if first is None:
                        first = self._next_index_locked()
                    self._fed = True
                    self._pending += data[:free_bytes]
                    data = data[free_bytes:]
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AudioOutputError(
                        f"wav:{self.path}: buffer still full after {timeout:.3f} s "
                        "(the wav-dac thread is not consuming)"
                    )
                self._cond.wait(remaining)
        return self._next_index_locked() if first is None else first

    def rewindable(self) -> int:
        """All it holds: the wav-dac thread has not taken it."""
        return self.buffered_frames()

    def rewind(self, frames: int) -> bool:
        size = frames * self._frame_bytes
        with self._cond:
            if not 0 <= size <= len(self._pending):
                return False
            del self._pending[len(self._pending) - size:]
            return True

    def next_frame_index(self) -> int:
        with self._cond:
            return self._next_index_locked()

    def _next_index_locked(self) -> int:
        return self._consumed + len(self._pending) // self._frame_bytes

    def frame_time(self, index: int) -> float:
        if self._start_epoch is None:
            raise AudioOutputError(f"wav:{self.path} is not open")
        return self._start_epoch + index / self.rate

    def buffered_frames(self) -> int:
        with self._cond:
            return len(self._pending) // self._frame_bytes

    def playhead(self) -> int:
        """By the clock the wav-dac thread consumes on, which moves in ticks."""
        return int((self._clock.monotonic() - self._mono_start) * self.rate)

    def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for running in (thread, self._disk_thread):
            assert running is not None
            running.join(timeout=2.0)
            if running.is_alive():
                raise AudioOutputError(
                    f"wav:{self.path}: the {running.name} thread did not stop within 2 s")
        self._thread = self._disk_thread = None
        with self._cond:
            self._pending.clear()
            self._failure = self._failure or f"wav:{self.path} is closed"
            self._cond.notify_all()
        try:
            self._rewrite_header()
            os.fsync(self._fd)
        except OSError as error:
            message = f"wav:{self.path}: cannot finalise the header: {error}"
            raise AudioOutputError(message) from error
        finally:
            self._close_fd()

    def _check_alive(self) -> None:
        if self._failure is not None:
            raise AudioOutputError(self._failure)
        if self._thread is None or not self._thread.is_alive():
            raise AudioOutputError(f"wav:{self.path}: the wav-dac thread is not running")

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _rewrite_header(self) -> None:
        data_bytes = self._file_frames * self._frame_bytes
        header = wav_header(self.rate, self.channels, self.sample_width, data_bytes)
        # pwrite leaves the file offset where the data is appended.
        os.pwrite(self._fd, header[_RIFF_SIZE_OFFSET:_RIFF_SIZE_OFFSET + 4], _RIFF_SIZE_OFFSET)
        os.pwrite(self._fd, header[_DATA_SIZE_OFFSET:], _DATA_SIZE_OFFSET)

    def _run(self) -> None:
        request_realtime()
        try:
            self._consume_until_stopped()
        except Exception as error:  # the writer must learn that the card is gone
            self._fail(f"wav:{self.path}: the wav-dac thread failed: {error!r}")
            raise

    def _write_to_disk(self) -> None:
        try:
            self._write_until_stopped()
        except OSError as error:
            reason = "disk full" if error.errno == errno.ENOSPC else "write failed"
            self._fail(f"wav:{self.path}: {reason} after {self._file_frames} frames: {error}")
        except Exception as error:
            self._fail(f"wav:{self.path}: the wav-disk thread failed: {error!r}")
            raise

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        with self._cond:
            self._failure = message
            self._cond.notify_all()

    def _consume_until_stopped(self) -> None:
        while not self._stop.is_set():
            # Absolute pacing: after a stall, everything due is consumed at once (no drift).
            due = self.playhead() + 1
            with self._cond:
                count = due - self._consumed
                if count > 0:
                    taken = min(len(self._pending), count * self._frame_bytes)
                    self._to_disk += self._pending[:taken]
                    del self._pending[:taken]
                    padding = count * self._frame_bytes - taken
                    if padding:
                        self._to_disk += bytes(padding)
                        if self._fed:
                            silent = padding // self._frame_bytes
                            self._underrun_frames += silent
                            self._spans_to_disk.append((due - silent, silent))
                    self._consumed = due
                    self._cond.notify_all()
            self._stop.wait(self._tick_s)

    def _write_until_stopped(self) -> None:
        """Everything consumed goes to the file, the last of it after the stop."""
        next_header = self._clock.monotonic() + self._header_interval_s
        while True:
            with self._cond:
                if not self._to_disk and not self._stop.is_set():
                    self._cond.wait(self._header_interval_s)
                chunk, self._to_disk = self._to_disk, bytearray()
                spans, self._spans_to_disk = self._spans_to_disk, []
                stopping = self._stop.is_set()
            if chunk:
                _write_all(self._fd, chunk)
                self._file_frames += len(chunk) // self._frame_bytes
            if spans:
                with self.underruns_path.open("a", encoding="ascii") as lines:
                    lines.writelines(f"{first} {frames}\n" for first, frames in spans)
            now = self._clock.monotonic()
            if now >= next_header:
                self._rewrite_header()
                next_header = now + self._header_interval_s
            if stopping and not chunk:
                return
