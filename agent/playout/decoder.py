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
from typing import Literal, Protocol

from agent.playout.framing import HEARTBEAT, PCM, STATE, read_frame

log = logging.getLogger(__name__)

StreamState = Literal["starting", "playing", "ended", "error", "crashed", "killed"]
# Enough PCM for every pre-roll the control loop asks for, with room to spare.
MAX_BUFFER_BYTES = 48000 * 4 * 30


class Decoded(Protocol):
    """PCM of one item as the control loop sees it: a :class:`DecodedStream`, or the
    in-memory stream of the simulation (``agent/playout/memory_media.py``)."""

    state: StreamState
    message: str
    pcm_bytes: int

    def read(self, max_bytes: int) -> bytes: ...

    def buffered_bytes(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def silent_for(self) -> float: ...

    def close(self) -> None: ...


class Decoders(Protocol):
    def open(self, mrl: str, start_s: float = 0.0, caching_ms: int = 300) -> Decoded: ...


class DecodedStream:
    """PCM of one item, produced by one worker process. ``read`` never blocks."""

    def __init__(self, process: subprocess.Popen[bytes], name: str,
                 monotonic: Callable[[], float]) -> None:
        self._process = process
        self._monotonic = monotonic
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.state: StreamState = "starting"
        self.message = ""
        self.last_pcm = monotonic()
        self.last_heard = monotonic()
        self.pcm_bytes = 0
        self._reader = threading.Thread(target=self._read_loop, name=name, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _read_loop(self) -> None:
        assert self._process.stdout is not None
        stdout = self._process.stdout
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
            elif kind == HEARTBEAT:
                continue
        if self.state not in ("ended", "error", "killed"):
            self.state = "crashed"
            self.message = f"decoder exited with {self._process.wait()}"

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

    def close(self, timeout: float = 2.0) -> None:
        if self._process.poll() is None:
            if self.state not in ("ended", "error", "crashed"):
                self.state = "killed"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout)
        self._reader.join(timeout)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


class DecoderPool:
    """Starts decoder workers, keeping one warm."""

    def __init__(self, rate: int, monotonic: Callable[[], float],
                 python: str = sys.executable) -> None:
        self._rate = rate
        self._monotonic = monotonic
        self._python = python
        self._warm: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self._python, "-m", "agent.playout.decoder_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, bufsize=0)

    def warm_up(self) -> None:
        """Start the idle worker now, so that even the first item starts without delay."""
        with self._lock:
            if self._warm is None:
                self._warm = self._spawn()

    def open(self, mrl: str, start_s: float = 0.0, caching_ms: int = 300) -> DecodedStream:
        with self._lock:
            process = self._warm if self._warm is not None and self._warm.poll() is None \
                else self._spawn()
            self._warm = self._spawn()
            self._count += 1
            name = f"decoder-{self._count}"
        job = {"mrl": mrl, "start_s": start_s, "rate": self._rate, "caching_ms": caching_ms}
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(job).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            log.warning("warm decoder died before its job; the stream will show it")
        return DecodedStream(process, name, self._monotonic)

    def close(self) -> None:
        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None and warm.poll() is None:
            os.killpg(warm.pid, signal.SIGKILL)
            warm.wait(2)
            for pipe in (warm.stdin, warm.stdout):
                if pipe is not None:
                    pipe.close()
