"""The FM receivers the agent holds: each runs its demodulating receiver (``rtl_fm.py``,
``rtl_tcp.py``) in a worker process, ``python -m drivers.sdr.demod_worker``, for as long as
it relays, and reads the worker's PCM and signal level from a pipe.

Why a process: the demodulators need numpy and scipy (70-80 MB of RSS, a second of import),
which the agent then never imports; they are paid only while a station is relayed, and
end with the relay. The worker also keeps the demodulation off the agent's GIL.

Worker -> agent messages on the worker's stdout: a header (one kind byte, a big-endian u32
payload length) and the payload:
- ``R``: tuned, PCM follows (no payload);
- ``P``: signal level (big-endian f64, NaN when the receiver does not measure it), then
  interleaved s16le stereo at 48 kHz;
- ``M`` / ``S``: the receiver failed with SdrMissing / SdrStalled (UTF-8 message); the worker
  then exits.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import IO, ClassVar, Self

from drivers.sdr.base import FmReceiver, SdrMissing, SdrSettings, SdrStalled

HEADER = struct.Struct(">cI")
LEVEL = struct.Struct(">d")
READY, PCM, MISSING, STALLED = b"R", b"P", b"M", b"S"
# Python with numpy and scipy.signal starts in ~1 s on this machine and several on a Pi;
# rtl_fm then waits up to 3 s for a dongle's first samples.
STARTUP_TIMEOUT_S = 10.0
STOP_WAIT_S = 2.0  # the worker stops its own receiver (rtl_fm: SIGTERM, up to 1 s) first
READ_CHUNK = 65536


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def encode_pcm(level_dbfs: float | None, pcm: bytes) -> bytes:
    return encode(PCM, LEVEL.pack(math.nan if level_dbfs is None else level_dbfs) + pcm)


class WorkerReceiver(FmReceiver):
    """An FmReceiver whose ``backend`` (a key of demod_worker.DEMODULATORS) runs in a worker."""

    backend: ClassVar[str]

    def __init__(self, settings: SdrSettings, *, python: str = sys.executable,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self._settings = settings
        self._python = python
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._received = bytearray()
        self._pcm = bytearray()
        self._ready = False
        self._signal_dbfs: float | None = None

    @classmethod
    def from_settings(cls, settings: SdrSettings) -> Self:
        return cls(settings)

    def command(self, frequency_mhz: float) -> list[str]:
        s = self._settings
        command = [self._python, "-m", "drivers.sdr.demod_worker", self.backend,
                   "--frequency-mhz", repr(frequency_mhz), "--rtl-tcp", s.rtl_tcp_address,
                   "--sample-rate", str(s.sample_rate), "--ppm", str(s.ppm)]
        return command if s.gain_db is None else [*command, "--gain-db", repr(s.gain_db)]

    def start(self, frequency_mhz: float) -> None:
        self.stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        try:
            self._process = subprocess.Popen(
                self.command(frequency_mhz), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self._stderr, start_new_session=True)
        except OSError as exc:
            self.stop()
            raise SdrMissing(f"cannot run the FM demodulator worker: {exc}") from exc
        assert self._process.stdout is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        self._received.clear()
        self._pcm.clear()
        self._ready = False
        self._signal_dbfs = None
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise SdrStalled(f"the FM demodulator worker did not tune within "
                                 f"{self._startup_timeout_s:.0f} s")
            self._receive(min(remaining, 0.1))

    def read(self, timeout: float) -> bytes:
        if not self._pcm:
            self._receive(timeout)
        pcm = bytes(self._pcm)
        self._pcm.clear()
        return pcm

    @property
    def signal_dbfs(self) -> float | None:
        return self._signal_dbfs

    def _receive(self, timeout: float) -> None:
        """Reads what the worker sent within ``timeout`` and takes in its whole messages;
        raises the receiver's failure, or SdrStalled when the worker ended."""
        if self._process is None or self._process.stdout is None:
            raise SdrStalled("receiver not started")
        readable, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not readable:
            return
        data = os.read(self._process.stdout.fileno(), READ_CHUNK)
        if not data:
            raise self._exit_error()
        self._received += data
        while len(self._received) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._received)
            end = HEADER.size + size
            if len(self._received) < end:
                return
            payload = bytes(self._received[HEADER.size:end])
            del self._received[:end]
            self._take(kind, payload)

    def _take(self, kind: bytes, payload: bytes) -> None:
        if kind == PCM:
            (level,) = LEVEL.unpack_from(payload)
            self._signal_dbfs = None if math.isnan(level) else level
            self._pcm += payload[LEVEL.size:]
        elif kind == READY:
            self._ready = True
        elif kind in (MISSING, STALLED):
            self.stop()
            error = SdrMissing if kind == MISSING else SdrStalled
            raise error(payload.decode(errors="replace"))
        else:
            self.stop()
            raise SdrStalled(f"the FM demodulator worker sent an unknown message {kind!r}")

    def _exit_error(self) -> SdrStalled:
        assert self._process is not None and self._stderr is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=STOP_WAIT_S)
        code = self._process.poll()
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        self.stop()
        last = tail.splitlines()[-1] if tail else "no output"
        return SdrStalled(f"the FM demodulator worker exited with {code}: {last}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            # SIGTERM first: the worker then stops its receiver (and rtl_fm, in its own
            # session); SIGKILL to the worker's group if it does not exit.
            for send in (process.terminate, lambda: os.killpg(process.pid, signal.SIGKILL)):
                with contextlib.suppress(ProcessLookupError):
                    send()
                try:
                    process.wait(timeout=STOP_WAIT_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class RtlFmWorker(WorkerReceiver):
    backend = "rtl_fm"


class RtlTcpWorker(WorkerReceiver):
    backend = "rtl_tcp"
