"""The real-hardware side of the end-to-end tests (hil.md, docs/hil.md).

With ``BROADCAST_HIL=1`` the tests drive a real controller: the agent plays to a real ALSA
PCM and switches a real GPIO relay. What the stand-ins recorded in the other mode is then
recorded from the hardware, in the same formats, so the tests and the analysis helpers of
tests/support/wavfile.py run unchanged:

- :class:`CaptureRecorder` runs ``arecord`` on the PCM that hears the amplifier (or the
  loopback) and writes a growing WAV with its ``<path>.json`` sidecar, like the clocked
  WAV sink;
- :class:`AmplifierMonitor` runs ``gpiomon`` on an input wired to the relay's output and
  writes ``{"at", "on"}`` lines, like the simulated amplifier's ``amplifier-sim.jsonl``.

The rig is described by environment variables (:meth:`HilRig.from_env`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from drivers.audio.wav import wav_header
from tests.support.filesystems import write_json_atomically

HIL = os.environ.get("BROADCAST_HIL") == "1"

SAMPLE_WIDTH = 2
READ_BYTES = 65536
STARTUP_S = 0.3  # a child that exits this soon after starting could not open its device
STOP_TIMEOUT_S = 5.0
ONE_DAY_S = 86400.0


REQUIRED = ("PLAYBACK", "CAPTURE", "AMP_CHIP", "AMP_LINE")


class HilError(Exception):
    """The rig is misdescribed, or a recording tool failed; the message says how."""


# ---- the rig ----------------------------------------------------------------------------

def _chip_line(name: str, value: str) -> tuple[str, int]:
    chip, _, line = value.rpartition(":")
    if not chip or not line.isdigit():
        raise HilError(f"{name} must be chip:line (for example gpiochip0:27), got {value!r}")
    return chip, int(line)


def _flag(name: str, value: str) -> bool:
    if value not in ("0", "1"):
        raise HilError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclass(frozen=True)
class HilRig:
    """One controller wired for the tests; see docs/hil.md for the wiring."""

    playback: str  # ALSA PCM the agent plays to
    capture: str  # ALSA PCM that hears what the agent played
    amp_chip: str
    amp_line: int
    amp_active_high: bool
    amp_monitor: tuple[str, int] | None  # input wired to the relay's output
    amp_monitor_active_high: bool
    sdr: str | None  # "rtl_fm", or host:port of an rtl_tcp serving the dongle
    fm_mhz: float | None  # a station receivable at the rig
    capture_gain_db: float  # level at the capture minus level played (0: digital loopback)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> HilRig:
        """The rig of ``BROADCAST_HIL_*``; a HilError lists every missing or bad variable."""
        problems: list[str] = []

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(f"BROADCAST_HIL_{name}", "").strip() or default
            if value is None and name in REQUIRED:
                problems.append(f"BROADCAST_HIL_{name} is not set")
            return value

        def parse(name: str, convert: Any, default: str | None = None) -> Any:
            raw = get(name, default)
            if raw is None:
                return None
            try:
                return convert(f"BROADCAST_HIL_{name}", raw)
            except (HilError, ValueError) as error:
                problems.append(str(error))
                return None

        rig = cls(
            playback=get("PLAYBACK") or "",
            capture=get("CAPTURE") or "",
            amp_chip=get("AMP_CHIP") or "",
            amp_line=parse("AMP_LINE", lambda _, v: int(v)) or 0,
            amp_active_high=parse("AMP_ACTIVE_HIGH", _flag, "1"),
            amp_monitor=parse("AMP_MONITOR", _chip_line),
            amp_monitor_active_high=parse("AMP_MONITOR_ACTIVE_HIGH", _flag, "1"),
            sdr=get("SDR"),
            fm_mhz=parse("FM_MHZ", lambda _, v: float(v)),
            capture_gain_db=parse("CAPTURE_GAIN_DB", lambda _, v: float(v), "0") or 0.0,
        )
        if problems:
            raise HilError("BROADCAST_HIL=1 but the rig is not described (docs/hil.md):\n  "
                           + "\n  ".join(problems))
        return rig

    def config_overrides(self) -> dict[str, Any]:
        """What tests/support/agentproc.base_config changes to run on this rig."""
        overrides: dict[str, Any] = {
            "audio": {"output": f"alsa:{self.playback}"},
            "amplifier": {"backend": "gpio", "gpio": {
                "chip": self.amp_chip, "line": self.amp_line,
                "active_high": self.amp_active_high}},
        }
        if self.sdr == "rtl_fm":
            overrides["fm"] = {"backend": "rtl_fm"}
        elif self.sdr is not None:
            overrides["fm"] = {"backend": "rtl_tcp", "rtl_tcp": self.sdr}
        return overrides


@functools.cache
def rig() -> HilRig:
    """The rig of this test session's environment (read once)."""
    return HilRig.from_env()


# ---- child processes ----------------------------------------------------------------------

def _spawn(argv: list[str], stderr: IO[bytes], what: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr, start_new_session=True)
    except OSError as error:
        raise HilError(f"cannot run {argv[0]!r} for {what}: {error} (docs/hil.md lists the "
                       "packages)") from error


def _failed_at_start(child: subprocess.Popen[bytes], stderr_path: Path,
                     what: str) -> HilError | None:
    """The error of a child that exits with a failure within STARTUP_S (no such device,
    busy, permission), read from its stderr; None if it runs or finished cleanly."""
    try:
        child.wait(STARTUP_S)
    except subprocess.TimeoutExpired:
        return None
    if child.returncode == 0:
        return None
    message = stderr_path.read_text(errors="replace").strip() or "no message"
    return HilError(f"{what} exited with {child.returncode}: {message}")


def _end(child: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (arecord and gpiomon finish cleanly on it), then SIGKILL if it lingers."""
    if child is None or child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(STOP_TIMEOUT_S)


# ---- the capture --------------------------------------------------------------------------

class CaptureRecorder:
    """Records ``device`` with ``arecord`` into ``path`` in the clocked WAV sink's format.

    ``start_epoch`` is not measured at the converter but estimated from arrival times:
    frames cannot be read before they were captured, so each read at wall time ``t`` with
    ``n`` frames read so far bounds ``start_epoch <= t - n / rate``. The smallest bound seen
    in the first ``settle_s`` is kept (the sidecar is rewritten when it improves): late
    wake-ups only loosen a bound, and the first reads that come promptly pin it to within
    the scheduling delay; the sample clock cannot drift far from the system clock in that
    second. The remaining error is the converter's own latency (a few samples for a USB
    card; one period for snd-aloop, which delivers whole periods) plus that delay, and the
    capture runs on the card's crystal, so over minutes it drifts by its ppm error.
    """

    def __init__(self, device: str, path: Path, *, rate: int = 48000, channels: int = 2,
                 period_frames: int = 480, arecord_path: str = "arecord",
                 header_interval_s: float = 0.5, settle_s: float = 1.0) -> None:
        self.device = device
        self.path = path
        self.sidecar_path = path.with_name(path.name + ".json")
        self.log_path = path.with_name(path.name + ".arecord.log")
        self.rate = rate
        self.channels = channels
        self._period_frames = period_frames
        self._arecord = arecord_path
        self._header_interval_s = header_interval_s
        self._settle_s = settle_s
        self._frame_bytes = channels * SAMPLE_WIDTH
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._data_bytes = 0
        self.start_epoch: float | None = None

    def command(self) -> list[str]:
        return [self._arecord, "-q", "-D", self.device, "-f", "S16_LE", "-r", str(self.rate),
                "-c", str(self.channels), "-t", "raw", f"--period-size={self._period_frames}",
                f"--buffer-size={self._period_frames * 8}"]

    def start(self) -> None:
        """Truncate the capture and start recording (a HilError if arecord fails)."""
        self.stop()
        self._data_bytes = 0
        self.start_epoch = None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, wav_header(self.rate, self.channels, SAMPLE_WIDTH, 0))
        what = f"{self._arecord} recording {self.device}"
        with open(self.log_path, "wb") as log:
            try:
                self._child = _spawn(self.command(), log, what)
            except HilError:
                os.close(fd)
                raise
        # Read at once: a pipe holds only about 0.3 s of 48 kHz stereo.
        self._thread = threading.Thread(target=self._record, args=(self._child, fd),
                                        name="hil-capture", daemon=True)
        self._thread.start()
        error = _failed_at_start(self._child, self.log_path, what)
        if error is not None:
            self.stop()
            raise error

    def _record(self, child: subprocess.Popen[bytes], fd: int) -> None:
        assert child.stdout is not None
        source = child.stdout.fileno()
        settle_until: float | None = None
        next_header = time.monotonic() + self._header_interval_s
        try:
            while chunk := os.read(source, READ_BYTES):
                arrived = time.time()
                os.write(fd, chunk)
                self._data_bytes += len(chunk)
                if settle_until is None:
                    settle_until = time.monotonic() + self._settle_s
                if time.monotonic() <= settle_until:
                    self._bound_start(arrived)
                if time.monotonic() >= next_header:
                    self._write_header(fd)
                    next_header = time.monotonic() + self._header_interval_s
        finally:
            self._write_header(fd)
            os.close(fd)
            child.stdout.close()

    def _bound_start(self, arrived: float) -> None:
        bound = arrived - self._data_bytes // self._frame_bytes / self.rate
        if self.start_epoch is None or bound < self.start_epoch:
            self.start_epoch = bound
            write_json_atomically(self.sidecar_path, {
                "start_epoch": bound, "rate": self.rate, "channels": self.channels,
                "format": "s16le"})

    def _write_header(self, fd: int) -> None:
        whole = self._data_bytes // self._frame_bytes * self._frame_bytes
        os.pwrite(fd, wav_header(self.rate, self.channels, SAMPLE_WIDTH, whole), 0)

    @property
    def frames(self) -> int:
        return self._data_bytes // self._frame_bytes

    def overruns(self) -> list[str]:
        """arecord's "overrun!!!" reports: frames were lost and the timeline is off after."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "overrun" in line]

    def stop(self) -> None:
        """Stop arecord and finish the file (the capture stays for the test to read)."""
        _end(self._child)
        self._child = None
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                raise HilError(f"the capture thread of {self.path} did not finish")
            self._thread = None



# ---- the relay ----------------------------------------------------------------------------

# gpiomon (libgpiod 1.6) prints "event: %s offset: %u timestamp: [%8ld.%09ld]" with
# " RISING EDGE" or "FALLING EDGE".
GPIOMON_EVENT = re.compile(
    r"^event:\s+(?P<edge>RISING|FALLING) EDGE\s+offset:\s*(?P<offset>\d+)\s+"
    r"timestamp:\s*\[\s*(?P<seconds>\d+)\.(?P<nanoseconds>\d{9})\]\s*$")


@dataclass(frozen=True)
class EdgeEvent:
    rising: bool
    offset: int
    timestamp: float  # as the kernel stamped it (see to_wall_time)


def parse_gpiomon_line(line: str) -> EdgeEvent:
    """One line of gpiomon's default output; ValueError for anything else."""
    match = GPIOMON_EVENT.match(line.strip())
    if match is None:
        raise ValueError(f"not a gpiomon event line: {line.strip()!r}")
    return EdgeEvent(rising=match["edge"] == "RISING", offset=int(match["offset"]),
                     timestamp=int(match["seconds"]) + int(match["nanoseconds"]) / 1e9)


def to_wall_time(timestamp: float, now: float, monotonic_now: float) -> float:
    """A GPIO event timestamp as wall time. Linux stamps line events with CLOCK_REALTIME
    before 5.7 and CLOCK_MONOTONIC since; a stamp within a day of the wall clock is taken
    as wall time, any other is moved by the current wall-minus-monotonic offset."""
    if abs(timestamp - now) < ONE_DAY_S:
        return timestamp
    return timestamp + (now - monotonic_now)


class AmplifierMonitor:
    """Watches an input wired to the relay's output and appends ``{"at", "on"}`` lines to
    ``log_path``, starting with the level read when it starts (the simulated amplifier's
    format). Lines gpiomon prints that are not events are kept in :attr:`unparsed`."""

    def __init__(self, chip: str, line: int, log_path: Path, *, active_high: bool = True,
                 gpiomon_path: str = "gpiomon", gpioget_path: str = "gpioget") -> None:
        self.chip = chip
        self.line = line
        self.log_path = log_path
        self.active_high = active_high
        self._gpiomon = gpiomon_path
        self._gpioget = gpioget_path
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.unparsed: list[str] = []

    def _where(self) -> str:
        return f"{self._gpiomon} watching the relay monitor {self.chip}:{self.line}"

    def start(self) -> None:
        self.stop()
        initial = self._read_level()
        self._append(time.time(), initial)
        stderr_path = self.log_path.with_name(self.log_path.name + ".gpiomon.log")
        with open(stderr_path, "wb") as stderr:
            self._child = _spawn([self._gpiomon, "-b", self.chip, str(self.line)], stderr,
                                 self._where())
        self._thread = threading.Thread(target=self._watch, args=(self._child,),
                                        name="hil-amp-monitor", daemon=True)
        self._thread.start()
        error = _failed_at_start(self._child, stderr_path, self._where())
        if error is not None:
            self.stop()
            raise error

    def _read_level(self) -> bool:
        argv = [self._gpioget, self.chip, str(self.line)]
        where = f"reading the relay monitor {self.chip}:{self.line}"
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=STARTUP_S * 10)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise HilError(f"{where}: {' '.join(argv)}: {error}") from error
        level = result.stdout.strip()
        if result.returncode != 0 or level not in ("0", "1"):
            raise HilError(f"{where}: {' '.join(argv)} exited with "
                           f"{result.returncode}: {result.stderr.strip() or level!r}")
        return (level == "1") == self.active_high

    def _watch(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        with child.stdout:
            for raw in child.stdout:
                text = raw.decode(errors="replace")
                try:
                    event = parse_gpiomon_line(text)
                except ValueError:
                    self.unparsed.append(text.strip())
                    continue
                at = to_wall_time(event.timestamp, time.time(), time.monotonic())
                self._append(at, event.rising == self.active_high)

    def _append(self, at: float, on: bool) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"at": at, "on": on}) + "\n")

    def transitions(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.strip()]

    def stop(self) -> None:
        _end(self._child)
        self._child = None
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None


# ---- what an agent process needs ---------------------------------------------------------

class RigObservers:
    """For one test agent on the rig: the recorder writing ``capture`` (when the agent
    plays to ALSA) and the relay monitor writing ``relay_log`` (when the agent drives the
    GPIO relay and the rig has a monitor input)."""

    def __init__(self, config: Mapping[str, Any], capture: Path, relay_log: Path) -> None:
        the_rig = rig()
        self.drives_relay = config["amplifier"]["backend"] == "gpio"
        self.recorder = (CaptureRecorder(the_rig.capture, capture, rate=config["audio"].get(
            "rate", 48000)) if config["audio"]["output"].startswith("alsa:") else None)
        self.relay: AmplifierMonitor | None = None
        if self.drives_relay and the_rig.amp_monitor is not None:
            chip, line = the_rig.amp_monitor
            self.relay = AmplifierMonitor(chip, line, relay_log,
                                          active_high=the_rig.amp_monitor_active_high)

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        if self.relay is not None:
            self.relay.start()

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self.recorder is not None:
            self.recorder.stop()

    def amplifier_log(self) -> list[dict[str, Any]]:
        if self.relay is None:
            raise HilError("the relay is not observed on this rig: wire an input to the "
                           "relay's output and set BROADCAST_HIL_AMP_MONITOR (docs/hil.md)")
        return self.relay.transitions()
