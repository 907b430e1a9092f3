"""`power.backend: gpio`: the UPS or battery board's mains-present line, read through
Debian's libgpiod tools (`gpiod` package), like drivers/amplifier/gpio.py drives its relay.

`gpioget` reads the level once, then one `gpiomon` child prints every edge as it happens
(`-F %e`: 1 rising, 0 falling); each reading drains its output without blocking, so the
sensor needs no thread of its own. When a tool cannot run (no chip, line busy, no
libgpiod) the state is unknown and the pair is started again at most every ``retry_s``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from typing import Self

from drivers.clock import Clock, SystemClock
from drivers.power.base import MainsSensor, PowerSettings

log = logging.getLogger(__name__)

GPIOGET_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 1.0


class GpioMainsSensor(MainsSensor):
    def __init__(self, chip: str, line: int, active_high: bool, *,
                 gpioget_path: str = "gpioget", gpiomon_path: str = "gpiomon",
                 retry_s: float = 5.0, clock: Clock | None = None) -> None:
        self.chip = chip
        self.line = line
        self.active_high = active_high
        self._gpioget = gpioget_path
        self._gpiomon = gpiomon_path
        self._retry_s = retry_s
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._monitor: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._level: bool | None = None  # the line's level, high = True
        self._next_start = 0.0

    @classmethod
    def from_settings(cls, settings: PowerSettings) -> Self:
        return cls(settings.chip, settings.line, settings.active_high)

    @property
    def mains_present(self) -> bool | None:
        with self._lock:
            if self._monitor is not None and self._monitor.poll() is None:
                self._drain(self._monitor)
            elif self._clock.monotonic() >= self._next_start:
                self._start()
            else:
                self._level = None
            return None if self._level is None else self._level == self.active_high

    def _start(self) -> None:
        self._stop_monitor()
        self._next_start = self._clock.monotonic() + self._retry_s
        where = f"GPIO {self.chip} line {self.line}"
        try:
            result = subprocess.run([self._gpioget, self.chip, str(self.line)],
                                    capture_output=True, timeout=GPIOGET_TIMEOUT_S)
            if result.returncode != 0 or result.stdout.strip() not in (b"0", b"1"):
                message = result.stderr.decode(errors="replace").strip() or "no reading"
                log.warning("mains sense: %s: gpioget failed: %s", where, message)
                return
            self._level = result.stdout.strip() == b"1"
            self._monitor = subprocess.Popen(
                [self._gpiomon, "-b", "-F", "%e", self.chip, str(self.line)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            log.warning("mains sense: %s: %s (install Debian's gpiod package)", where, error)
            self._level = None
            return
        assert self._monitor.stdout is not None
        os.set_blocking(self._monitor.stdout.fileno(), False)

    def _drain(self, monitor: subprocess.Popen[bytes]) -> None:
        assert monitor.stdout is not None
        while True:
            try:
                chunk = os.read(monitor.stdout.fileno(), 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for event in lines:
            if event.strip() in (b"0", b"1"):
                self._level = event.strip() == b"1"

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        self._pending = b""
        if monitor is None:
            return
        monitor.terminate()
        try:
            monitor.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            monitor.kill()
            monitor.wait()
        if monitor.stdout is not None:
            monitor.stdout.close()

    def close(self) -> None:
        with self._lock:
            self._stop_monitor()
            self._level = None
