"""Decoding in libvlc worker processes, supervised from the agent.

Each item gets its own one-shot worker (agent/playout/decoder_worker.py); one idle
worker is kept warm so that an item starts without the cost of loading libvlc. A worker
that hangs (no PCM and no heartbeat) is killed by whoever owns its DecodedStream; a
crashed one shows up as the end of its output without an ``ended`` state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from agent.playout.framing import PCM, STATE, read_frame
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

StreamState = Literal["starting", "playing", "ended", "error", "crashed", "killed"]
# Enough PCM for every pre-roll the control loop asks for, with room to spare.
MAX_BUFFER_BYTES = 48000 * 4 * 30
JOIN_TIMEOUT_S = 2.0


class Decoded(Protocol):
    """PCM of one item as the control loop sees it: a :class:`DecodedStream`, or the
    in-memory stream of the simulation (``agent/playout/memory_media.py``)."""

    @property
    def state(self) -> StreamState: ...

    @property
    def message(self) -> str: ...

    @property
    def pcm_bytes(self) -> int: ...

    def read(self, max_bytes: int) -> bytes: ...

    def buffered_bytes(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def silent_for(self) -> float: ...

    def close(self) -> None: ...


class Decoders(Protocol):
    def open(self, mrl: str, start_s: float = 0.0, caching_ms: int = 300) -> Decoded: ...


class DecodedStream:
    """PCM of one item, produced by one worker process. No method blocks: the stream's
    own thread starts the worker when no warm one was ready, hands it its job, reads it,
    and reaps it once it exits or is killed."""

    def __init__(self, job: dict[str, Any], name: str, monotonic: Callable[[], float],
                 process: subprocess.Popen[bytes] | None,
                 spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self._job = job
        self._process = process
        self._spawn = spawn
        self._closing = False
        self._monotonic = monotonic
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.state: StreamState = "starting"
        self.message = ""
        self.last_pcm = monotonic()
        self.last_heard = monotonic()
        self.pcm_bytes = 0
        self._reader = NamedThread(target=self._run, name=name, daemon=True)
        self._reader.start()

    def _run(self) -> None:
        try:
            process = self._process if self._process is not None else self._spawn()
        except OSError as exc:
            self.state, self.message = "crashed", f"the decoder could not start: {exc}"
            return
        self._process = process
        if self._closing:  # closed while the worker was starting
            _kill(process)
        try:
            self._read(process)
        finally:
            _release(process, None)  # its output ended: it exits, or was killed

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(self._job).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            log.warning("decoder died before its job; the stream shows it")
        stdout = process.stdout
        while True:
            frame = read_frame(stdout)  # type: ignore[arg-type]
            if frame is None:
                break
            kind, payload = frame
            now = self._monotonic()
            self.last_heard = now
            if kind == PCM:
                with self._lock:
                    if len(self._buffer) + len(payload) <= MAX_BUFFER_BYTES:
                        self._buffer += payload
                self.pcm_bytes += len(payload)
                self.last_pcm = now
            elif kind == STATE:
                info = json.loads(payload)
                self.message = str(info.get("message", ""))
                self.state = info["state"]
        if self.state not in ("ended", "error", "killed"):
            self.state = "crashed"
            self.message = f"decoder exited with {process.wait()}"

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            chunk = bytes(self._buffer[:max_bytes])
            del self._buffer[:len(chunk)]
        return chunk

    def buffered_bytes(self) -> int:
        with self._lock:
            return len(self._buffer)

    @property
    def finished(self) -> bool:
        """No more PCM will come (ended, failed or dead) and the buffer is drained."""
        return self.state in ("ended", "error", "crashed", "killed") and \
            not self._reader.is_alive() and self.buffered_bytes() == 0

    def silent_for(self) -> float:
        """Seconds since the worker last delivered PCM."""
        return self._monotonic() - self.last_pcm

    def close(self) -> None:
        """Kills the worker if it still runs; its thread reaps it."""
        if self.state not in ("ended", "error", "crashed"):
            self.state = "killed"
        self._closing = True
        if self._process is not None:
            _kill(self._process)


class DecoderPool:
    """Starts decoder workers, keeping one warm: the thread "decoder-warm" starts the
    next one as soon as one is taken, so that :meth:`open` never waits for a process."""

    def __init__(self, rate: int, monotonic: Callable[[], float],
                 python: str = sys.executable) -> None:
        self._rate = rate
        self._monotonic = monotonic
        self._python = python
        self._warm: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self._python, "-m", "agent.playout.decoder_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, bufsize=0)

    def warm_up(self) -> None:
        """Start keeping a worker warm, so that even the first item starts without
        loading libvlc."""
        if self._thread is None:
            self._thread = NamedThread(target=self._keep_warm, name="decoder-warm",
                                       daemon=True)
            self._thread.start()
        self._wanted.set()

    def _keep_warm(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                if self._stopping:
                    return
                needed = self._warm is None or self._warm.poll() is not None
            if not needed:
                continue
            try:
                process = self._spawn()
            except OSError as exc:
                log.error("could not start a decoder worker: %s", exc)
                continue  # the next open starts its own and asks again
            with self._lock:
                stale, self._warm = self._warm, process
                stopping = self._stopping
            for extra in (stale, process if stopping else None):
                if extra is not None:
                    _reap(extra)

    def open(self, mrl: str, start_s: float = 0.0, caching_ms: int = 300) -> DecodedStream:
        with self._lock:
            warm, self._warm = self._warm, None
            self._count += 1
            name = f"decoder-{self._count}"
        if warm is not None and warm.poll() is not None:
            _reap(warm)
            warm = None
        self._wanted.set()
        job = {"mrl": mrl, "start_s": start_s, "rate": self._rate, "caching_ms": caching_ms}
        return DecodedStream(job, name, self._monotonic, warm, self._spawn)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            warm, self._warm = self._warm, None
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
        if warm is not None:
            _reap(warm)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _reap(process: subprocess.Popen[bytes]) -> None:
    _kill(process)
    _release(process, JOIN_TIMEOUT_S)


def _release(process: subprocess.Popen[bytes], timeout: float | None) -> None:
    """Waits for the worker's exit and closes our ends of its pipes."""
    process.wait(timeout)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
