"""Run the real agent process for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import requests
import yaml

from tests.support import hil

REPO = Path(__file__).resolve().parents[2]
UNIT_NICE = -10  # systemd/broadcast-agent.service
T = TypeVar("T")


LOWEST_PORT = 10_000


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. Servers here are restarted
    on their port (a broker back from an outage, an agent after a kill); an ephemeral port
    may meanwhile have become the local end of an outgoing connection, and the restart
    fail with "Address already in use" (seen in a fresh-clone run)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32_768
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(LOWEST_PORT, max(ephemeral, LOWEST_PORT + 1_000))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def processes(marker: bytes) -> Iterator[tuple[int, Path]]:
    """(pid, /proc entry) of each process whose command line contains ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            yield int(entry.name), entry


def child_process(parent: int, marker: bytes) -> int | None:
    """Pid of the process that ``parent`` started whose command line contains ``marker``."""
    for pid, entry in processes(marker):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            return pid
    return None


def wait_for(predicate: Callable[[], T | None], timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def local_time(epoch: float, tz: str = "Asia/Ho_Chi_Minh") -> str:
    """HH:MM:SS of ``epoch`` in ``tz``, for schedule ``start`` fields."""
    return datetime.fromtimestamp(epoch, ZoneInfo(tz)).strftime("%H:%M:%S")


def base_config(tmp: Path, source_url: str, **overrides: Any) -> dict[str, Any]:
    """A config for tests: clocked WAV sink, simulated amplifier, no FM, no MQTT; with
    BROADCAST_HIL=1, the rig's sound card, relay and SDR instead (tests/support/hil.py)."""
    cfg: dict[str, Any] = {
        "device_id": "xa-test-01",
        "timezone": "Asia/Ho_Chi_Minh",
        "state_dir": str(tmp / "state"),
        "source": {"url": source_url, "token": "test-token", "poll_interval_s": 5,
                   "max_backoff_s": 2},
        "cache": {"dir": str(tmp / "cache"), "max_bytes": 200_000_000},
        "mqtt": {"brokers": []},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
        "audio": {"output": f"wav:{tmp / 'out.wav'}", "default_volume": 100},
        "amplifier": {"backend": "sim", "warmup_s": 0.5, "idle_off_s": 2},
        "fm": {"backend": "none"},
        "recording": {"dir": str(tmp / "recordings"), "segment_s": 5},
        # A test bench's clock is right, whatever the sandbox's NTP says; tests of the
        # clock trust override this.
        "clock": {"trusted_by": ["always"]},
    }
    if hil.HIL:
        _deep_update(cfg, hil.rig().config_overrides())
    _deep_update(cfg, overrides)
    return cfg


def _deep_update(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


class AgentProcess:
    """``broadcast-agent run`` in a child process with its own config directory. With
    BROADCAST_HIL=1 it also records the rig's capture into :attr:`wav` and watches its
    relay while the agent runs, so the tests read the same files in both modes."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp = tmp
        self.config = config
        self.config_path = tmp / "etc" / "agent.yaml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log_path = tmp / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        host, _, port = config["health"]["listen"].rpartition(":")
        self.health_url = f"http://{host}:{port}"
        kind, _, target = config["audio"]["output"].partition(":")
        self.wav = Path(target) if kind == "wav" else tmp / "capture.wav"
        self.state_dir = Path(config["state_dir"])
        self.rig = (hil.RigObservers(config, self.wav, tmp / "amplifier-monitor.jsonl")
                    if hil.HIL else None)

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> AgentProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if self.rig is not None:
            self.rig.start()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_niced_as_the_unit_runs)
        log.close()
        if wait:
            wait_for(self._up, 20, what=f"agent health endpoint ({self.log_tail()})")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"agent exited with {self.process.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            return requests.get(self.health_url + "/healthz", timeout=1).status_code in (200,
                                                                                        503)
        except requests.RequestException:
            return False

    def status(self) -> dict[str, Any]:
        reply = requests.get(self.health_url + "/status", timeout=5)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def memory_bytes(self, field: str = "VmRSS") -> int:
        """The agent process's ``VmRSS`` (now) or ``VmHWM`` (its peak) from /proc."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for the agent")

    def fault_codes(self) -> set[str]:
        return {f["code"] for f in self.status()["faults"]}

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit status once the agent has stopped (see :meth:`stopped`)."""
        self.terminate()
        return self.stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM to the agent if it runs, without waiting for it to stop."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stopped(self, timeout: float = 15) -> int:
        """The exit status of the agent told to stop; an agent still running ``timeout``
        later is killed and an AssertionError with its log raised."""
        try:
            return self._exit_status(timeout)
        finally:
            if self.rig is not None:
                self.rig.stop()

    def _exit_status(self, timeout: float) -> int:
        if self.process is None:
            return 0
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise AssertionError(f"agent did not stop on SIGTERM:\n{self.log_tail()}") from exc

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.rig is not None:
            self.rig.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def amplifier_log(self) -> list[dict[str, Any]]:
        if self.rig is not None and self.rig.drives_relay:
            return self.rig.amplifier_log()
        path = self.state_dir / "amplifier-sim.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _niced_as_the_unit_runs() -> None:
    """The agent's priority under systemd/broadcast-agent.service (``Nice=-10``), ahead of
    the test's own processes as of everything else on a controller; unchanged where the
    tests may not raise it (not root)."""
    with contextlib.suppress(PermissionError):
        os.nice(UNIT_NICE)
