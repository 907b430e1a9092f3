"""The recorder process (agent.recording.worker) as the agent holds it.

The agent owns both ends of the record pipe: the playout process writes what left the
card into it, the recorder process reads it. Either can then die and be replaced without
the other noticing: what the playout process wrote meanwhile waits in the pipe (or, when
the pipe is full, is dropped there and recorded as silence). The "recorder-watch" thread
reads the recorder's reports (``recording_failed`` raised and cleared, dropped periods,
signs of life) and starts it again, with a growing delay, when it exits; its exit raises
``recording_failed`` until it stores a segment again. A recorder that says nothing for
``HUNG_AFTER_S`` (stopped, or stuck on a dead disk) is killed, so that its exit says so.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.config.model import Config
from agent.core.faults import FaultRegistry
from agent.playout.feed import open_pipe
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
STOP_TIMEOUT_S = 5.0  # to encode what is left and close the segment
# It reports every second (worker.ALIVE_EVERY_S); a segment's fsync on a worn SD card, or
# the repair of one left open, may hold it for seconds, never for this long.
HUNG_AFTER_S = 30.0


@dataclass(frozen=True)
class RecorderSettings:
    directory: str
    max_bytes: int
    max_days: float
    segment_s: float
    rate: int  # the card's

    @classmethod
    def from_config(cls, cfg: Config) -> RecorderSettings:
        rec = cfg.recording
        return cls(str(rec.dir), rec.max_bytes, rec.max_days, rec.segment_s, cfg.audio.rate)

    def command(self, interpreter: str, record_fd: int) -> list[str]:
        return [interpreter, "-m", "agent.recording.worker", "--record-fd", str(record_fd),
                "--dir", self.directory, "--max-bytes", str(self.max_bytes),
                "--max-days", repr(self.max_days), "--segment-s", repr(self.segment_s),
                "--rate", str(self.rate),
                "--log-level", logging.getLevelName(logging.getLogger().level)]


class RecorderProcess:
    def __init__(self, settings: RecorderSettings, faults: FaultRegistry,
                 on_drop: Callable[[int], None], *,
                 interpreter: str = sys.executable, hung_after_s: float = HUNG_AFTER_S) -> None:
        self._settings = settings
        self._faults = faults
        self._on_drop = on_drop
        self._interpreter = interpreter
        self._hung_after_s = hung_after_s
        self._read_fd, self.write_fd = open_pipe()  # write_fd: for each playout process
        self._lock = threading.Lock()  # the process, and whether another may start
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._retry_s = FIRST_RETRY_S
        self._thread = NamedThread(target=self._run, name="recorder-watch", daemon=True)

    def start(self) -> None:
        """Starts the recorder process now, in the caller's thread: a stop() right after
        must find it there to record what the pipe already holds."""
        with self._lock:
            self._spawn()
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """The recorder process's, while one runs."""
        with self._lock:
            proc = self._proc
        return None if proc is None or proc.poll() is not None else proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """After the playout process exited: the recorder takes what is left in the pipe,
        closes its segment and exits; killed after ``timeout``."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if self.write_fd >= 0:
            os.close(self.write_fd)  # the last writer: the recorder reads to the end
            self.write_fd = -1
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("the recorder process did not stop within %.0f s: killed", timeout)
                proc.kill()
                proc.wait(timeout)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    # --- the recorder-watch thread -----------------------------------------------------
    def _run(self) -> None:
        while True:
            proc = self._proc  # set by start() or below, by this thread alone from now on
            if proc is not None:
                reported = self._take_reports(proc)
                code = proc.wait()
                if self._stopping.is_set():
                    return
                how = f"signal {-code}" if code < 0 else f"status {code}"
                exited = f"the recorder process exited with {how}"
                self._failed(exited if reported is None else f"{reported}; {exited}")
            if self._stopping.wait(self._retry_s):
                return
            self._retry_s = min(self._retry_s * 2, MAX_RETRY_S)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()

    def _spawn(self) -> None:
        command = self._settings.command(self._interpreter, self._read_fd)
        try:
            self._proc = subprocess.Popen(command, pass_fds=[self._read_fd],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as exc:
            self._failed(f"cannot start the recorder process: {exc}")
            self._proc = None

    def _take_reports(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Until the process closes its stdout (killed if it falls silent); returns its
        last failure not yet cured."""
        assert proc.stdout is not None
        failure = None
        pending = b""
        with proc.stdout as reports:
            while True:
                ready, _, _ = select.select([reports], [], [], self._hung_after_s)
                if not ready:
                    failure = (f"the recorder process gave no sign of life for "
                               f"{self._hung_after_s:g} s: killed")
                    self._failed(failure)
                    proc.kill()
                    continue  # to the end of its stdout
                chunk = os.read(reports.fileno(), 65536)
                if not chunk:
                    return failure
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    failure = self._take_report(line.decode("utf-8", "replace"), failure)

    def _take_report(self, line: str, failure: str | None) -> str | None:
        """One report; returns the failure not yet cured after it."""
        try:
            report = json.loads(line)
            if "failed" in report:  # the recorder logged it
                failure = str(report["failed"])
                self._faults.raise_("recording_failed", failure[:300])
            elif "stored" in report:
                failure = None
                self._retry_s = FIRST_RETRY_S
                self._faults.clear("recording_failed")
            elif "dropped" in report:
                self._on_drop(int(report["dropped"]))
            elif "alive" not in report:
                raise ValueError("no known key")
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("a report of the recorder process not understood (%s): %.200r",
                        exc, line)
        return failure

    def _failed(self, reason: str) -> None:
        log.error("off-air recording: %s", reason)
        self._faults.raise_("recording_failed", reason[:300])
