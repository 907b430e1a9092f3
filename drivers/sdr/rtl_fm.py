"""FM through the stock ``rtl_fm`` (Debian rtl-sdr 0.6) as a child process.

rtl_fm's ``-M wbfm`` and ``-E deemp`` de-emphasise with a hard-coded 75 µs (the American
value), so it runs as plain ``-M fm`` at 200 kS/s (rtl_fm captures at 1.2 MS/s, tuned fs/4
off-centre, and decimates) resampled to 48 kHz, and the 50 µs de-emphasis is applied here.
rtl_fm does not report the channel power, so ``signal_dbfs`` is None for this backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

from drivers.sdr.base import FmReceiver, SdrMissing, SdrSettings, SdrStalled

if TYPE_CHECKING:
    from drivers.sdr.fm_audio import Deemphasis

log = logging.getLogger(__name__)

DEMOD_RATE = 200_000
AUDIO_RATE = 48_000
# rtl_fm's discriminator output: pi radians per sample = 1 << 14 (polar_discriminant).
UNITS_PER_HZ = 2 * (1 << 14) / DEMOD_RATE
MISSING_MARKERS = ("No supported devices found", "usb_open error", "Failed to open rtlsdr",
                   "usb_claim_interface error")
READ_CHUNK = 16384
STOP_WAIT_S = 1.0
RTL2832U_VENDOR = "0bda"
RTL2832U_PRODUCTS = frozenset({"2832", "2838"})


class RtlFmReceiver(FmReceiver):
    def __init__(self, *, gain_db: float | None, ppm: int, executable: str = "rtl_fm",
                 startup_timeout_s: float = 3.0) -> None:
        self._gain_db = gain_db
        self._ppm = ppm
        self._executable = executable
        self._startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._deemphasis: Deemphasis | None = None  # numpy: built by the first relay
        self._odd_byte = b""
        self._pending = b""

    @classmethod
    def from_settings(cls, settings: SdrSettings) -> Self:
        return cls(gain_db=settings.gain_db, ppm=settings.ppm)

    def command(self, frequency_mhz: float) -> list[str]:
        command = [self._executable, "-M", "fm", "-f", str(round(frequency_mhz * 1e6)),
                   "-s", str(DEMOD_RATE), "-r", str(AUDIO_RATE), "-p", str(self._ppm)]
        if self._gain_db is not None:
            command += ["-g", f"{self._gain_db:g}"]
        return [*command, "-"]

    def start(self, frequency_mhz: float) -> None:
        # numpy is imported here, by the first relay, not when the daemon builds its tuner.
        from drivers.sdr.fm_audio import Deemphasis

        self.stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        try:
            self._process = subprocess.Popen(
                self.command(frequency_mhz), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self._stderr, start_new_session=True)
        except OSError as exc:
            self.stop()
            raise SdrMissing(f"cannot run {self._executable} (apt install rtl-sdr): {exc}") from exc
        assert self._process.stdout is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        self._deemphasis = Deemphasis(AUDIO_RATE, 50e-6)
        self._pending = b""
        # rtl_fm without a dongle prints why and exits at once: wait for its first PCM.
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._pending and time.monotonic() < deadline:
            self._pending = self._read_pcm(0.05)

    def read(self, timeout: float) -> bytes:
        data, self._pending = self._pending or self._read_pcm(timeout), b""
        data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        if whole == 0:
            return b""
        assert self._deemphasis is not None, "read() before start()"
        return self._deemphasis.stereo_from_s16(data[:whole], 1 / UNITS_PER_HZ)

    def _read_pcm(self, timeout: float) -> bytes:
        """Raw mono s16le from rtl_fm's stdout; b"" after ``timeout``; raises once it exits."""
        if self._process is None or self._process.stdout is None:
            raise SdrStalled("receiver not started")
        readable, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not readable:
            if self._process.poll() is not None:
                raise self._exit_error()
            return b""
        data = os.read(self._process.stdout.fileno(), READ_CHUNK)
        if not data:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=STOP_WAIT_S)
            raise self._exit_error()
        return data

    def _exit_error(self) -> SdrMissing | SdrStalled:
        """rtl_fm ended: SdrMissing if it could not open a dongle, else SdrStalled."""
        assert self._process is not None and self._stderr is not None
        code = self._process.poll()
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        self.stop()
        message = f"rtl_fm exited with {code}: {tail.splitlines()[-1] if tail else 'no output'}"
        if any(marker in tail for marker in MISSING_MARKERS):
            return SdrMissing(message)
        return SdrStalled(message)

    @property
    def signal_dbfs(self) -> float | None:
        return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
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


def reset_rtl_usb(devices_dir: Path = Path("/sys/bus/usb/devices")) -> list[str]:
    """Re-enumerates every RTL2832U dongle by toggling its sysfs ``authorized`` flag (the
    software equivalent of unplugging it). Returns the devices reset; devices that cannot be
    reset (no permission, no sysfs) are skipped with a log line."""
    reset: list[str] = []
    for device in sorted(devices_dir.glob("*")):
        try:
            vendor = (device / "idVendor").read_text().strip()
            product = (device / "idProduct").read_text().strip()
        except OSError:
            continue
        if vendor != RTL2832U_VENDOR or product not in RTL2832U_PRODUCTS:
            continue
        try:
            (device / "authorized").write_text("0")
            (device / "authorized").write_text("1")
        except OSError as exc:
            log.warning("cannot reset USB device %s: %s", device.name, exc)
            continue
        reset.append(device.name)
    return reset
