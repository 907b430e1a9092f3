"""The pipes a voice's PCM arrives on in the playout process (agent.playout.host): a file's
or a stream's, whose next bytes the engine can see without taking them, and a relay's,
played through a jitter buffer."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading

from agent.playout.jitter_buffer import PcmJitterBuffer
from agent.playout.voice import BYTES_PER_FRAME

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


def tee(source_fd: int, target_fd: int, max_bytes: int) -> int:
    """tee(2), not blocking: copies up to ``max_bytes`` from the pipe ``source_fd`` into
    the pipe ``target_fd``, leaving them in ``source_fd``. Returns how many; 0 when
    ``source_fd`` is empty and its writer gone, -1 when it is empty for now."""
    copied = int(_libc.tee(source_fd, target_fd, max_bytes, os.SPLICE_F_NONBLOCK))
    if copied >= 0:
        return copied
    code = ctypes.get_errno()
    if code == errno.EAGAIN:
        return -1
    raise OSError(code, f"tee: {os.strerror(code)}")


class PcmPipe:
    """A voice's PCM pipe (read end, non-blocking), as the engine's PcmSource."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._lock = threading.Lock()
        self._eof = False

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            if self._fd < 0 or self._eof:
                return b""
            data = self._read(max_bytes)
            if len(data) < max_bytes and not self._eof:
                # Short: at the end of the pipe this says so now, not one period later.
                data += self._read(max_bytes - len(data))
            return data

    def _read(self, max_bytes: int) -> bytes:
        try:
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            return b""
        if not data:
            self._eof = True
        return data

    @property
    def finished(self) -> bool:
        return self._eof

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class PipeSource(PcmPipe):
    """A file's or a stream's pipe: a PeekableSource. What the engine peeks at stays in
    the pipe until it is aired, so that a playout process that dies takes with it no more
    of the programme than it had played (the next one reads on from the same pipe)."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._peek_fds: tuple[int, int] | None = None  # the pipe tee(2) copies into
        self._peekable = True

    def peek(self, max_bytes: int) -> bytes:
        """What ``read`` would return next, up to ``max_bytes`` (the 64 KiB of a pipe at
        most); fewer when the pipe holds less."""
        with self._lock:
            if self._fd < 0 or self._eof or not self._peekable:
                return b""
            try:
                if self._peek_fds is None:
                    self._peek_fds = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                copied = tee(self._fd, self._peek_fds[1], max_bytes)
                return os.read(self._peek_fds[0], copied) if copied > 0 else b""
            except OSError as exc:  # read as any pipe is, without peeking
                log.warning("cannot peek at a voice's pipe (%s): it is read a period at a "
                            "time", exc)
                self._peekable = False
                return b""

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._peek_fds is not None:
                for fd in self._peek_fds:
                    os.close(fd)
                self._peek_fds = None


class LivePipeSource(PcmPipe):
    """A relay's pipe: the agent sends what was received as it arrives; this side keeps
    the jitter buffer (prefill, silence while short, oldest dropped on overflow), as the
    agent's relay would in one process, and counts what of the relay itself it played."""

    def __init__(self, fd: int, capacity_bytes: int, prefill_bytes: int,
                 burst_bytes: int) -> None:
        super().__init__(fd)
        # The relay's PCM crosses the agent's feeder, which passes it on in bursts (every
        # FEED_INTERVAL_S, or late after a stall of the agent's interpreter): room for
        # them above the relay's own capacity, or a burst would be dropped as overflow.
        self._jitter = PcmJitterBuffer(capacity_bytes + burst_bytes, prefill_bytes)
        self.lead_frames = 0  # asked for before the relay's first audio
        self._partial = b""

    def read(self, max_bytes: int) -> bytes:
        while data := super().read(64 * 1024):
            # A read may end inside a frame (a write larger than PIPE_BUF is not atomic):
            # the jitter buffer takes whole frames only, or its padding and dropping would
            # shift every later sample by a byte or two.
            data = self._partial + data
            whole = len(data) - len(data) % BYTES_PER_FRAME
            self._partial = data[whole:]
            self._jitter.write(data[:whole])
        if super().finished:  # the relay ended: what is left plays out, unpadded
            return self._jitter.take(max_bytes)
        chunk = self._jitter.read(max_bytes)
        if self._jitter.delivered_bytes == 0:
            self.lead_frames += max_bytes // BYTES_PER_FRAME
        return chunk

    @property
    def relayed_frames(self) -> int:
        return self._jitter.delivered_bytes // BYTES_PER_FRAME

    @property
    def finished(self) -> bool:
        return super().finished and self._jitter.queued_bytes == 0
