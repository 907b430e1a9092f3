"""`amplifier.backend: gpio`: the amplifier relay on a GPIO line, driven through `gpioset`
from Debian's `gpiod` package (libgpiod 1.6 on bookworm).

Why a child process rather than Python bindings: bookworm's python3-libgpiod is the v1 API
and is not on PyPI for the agent's virtualenv (PyPI's `gpiod` is the v2 API, which needs
libgpiod 2), and gpiozero's lgpio pin factory only runs on a Raspberry Pi. The tools are
packaged, stable, and work on every board with a GPIO character device.

A GPIO line keeps its driven level only while a process holds it, so one `gpioset` child
holds the level and is replaced on each change. It runs in `--mode=wait`, which holds
until its stdin reaches end-of-file: closing the pipe releases the line, and if the agent
dies, even by SIGKILL, the kernel closes the pipe and the line is released too. (With
`--mode=signal` an orphaned child would keep the amplifier powered and the line busy for
the restarted agent.)
"""

from __future__ import annotations

import subprocess
import threading
from typing import Self

from drivers.amplifier.base import Amplifier, AmplifierError, AmplifierSettings

RELEASE_TIMEOUT_S = 1.0


class GpioAmplifier(Amplifier):
    """Drives ``line`` of ``chip``: high for on when ``active_high``, else low for on.

    A ``gpioset`` that exits within ``settle_s`` of starting failed (no such chip, line
    busy, permission); its message is raised as an AmplifierError.
    """

    def __init__(
        self,
        chip: str,
        line: int,
        active_high: bool,
        *,
        gpioset_path: str = "gpioset",
        settle_s: float = 0.1,
    ) -> None:
        self.chip = chip
        self.line = line
        self.active_high = active_high
        self._gpioset = gpioset_path
        self._settle_s = settle_s
        self._lock = threading.Lock()
        self._holder: subprocess.Popen[bytes] | None = None
        self._on = False
        self._hold(False)

    @classmethod
    def from_settings(cls, settings: AmplifierSettings) -> Self:
        return cls(settings.chip, settings.line, settings.active_high)

    def _where(self) -> str:
        return f"GPIO {self.chip} line {self.line}"

    def command(self, on: bool) -> list[str]:
        level = 1 if on == self.active_high else 0
        return [self._gpioset, "--mode=wait", self.chip, f"{self.line}={level}"]

    def _hold(self, on: bool) -> None:
        self._release()
        try:
            holder = subprocess.Popen(
                self.command(on), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise AmplifierError(
                f"{self._where()}: cannot run {self._gpioset!r} ({error}); "
                "install Debian's gpiod package"
            ) from error
        try:
            holder.wait(timeout=self._settle_s)
        except subprocess.TimeoutExpired:
            self._holder = holder
            self._on = on
            return
        _, stderr = holder.communicate(timeout=RELEASE_TIMEOUT_S)
        message = stderr.decode(errors="replace").strip() or "no message"
        raise AmplifierError(
            f"{self._where()}: gpioset exited with status {holder.returncode}: {message} "
            "(is the chip name right? `gpiodetect` lists the chips)"
        )

    def _release(self) -> None:
        holder, self._holder = self._holder, None
        self._on = False  # released: the relay is at rest
        if holder is None:
            return
        try:
            holder.communicate(timeout=RELEASE_TIMEOUT_S)  # closes stdin: gpioset lets go
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.communicate()

    def set_power(self, on: bool) -> None:
        with self._lock:
            holding = self._holder is not None and self._holder.poll() is None
            if holding and on == self._on:
                return
            self._hold(on)

    @property
    def is_on(self) -> bool:
        return self._on

    def close(self) -> None:
        """Drive the off level, then release: many GPIO controllers (the Raspberry Pi's
        among them) keep the last level after release, so it must be the off level."""
        with self._lock:
            if self._holder is not None and self._on:
                self._hold(False)
            self._release()
