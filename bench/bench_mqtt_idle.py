"""Idle MQTT traffic of one agent, in bytes per hour, over plain TCP and over TLS.

A real Mosquitto; a byte-counting TCP proxy on loopback between each MqttLink and the
broker. After the connection and birth Status, the bytes that cross the proxy during the
window (heartbeat Status + keepalive pings) are extrapolated to an hour.

    .venv/bin/python -m bench.bench_mqtt_idle --seconds 300
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.core.clock import SystemClock
from agent.core.faults import FaultRegistry
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import CommandLimits, CommandValidator
from agent.mqtt.intake import CommandIntake
from agent.mqtt.link import MqttLink, MqttSettings
from agent.state.journal import Journal
from agent.state.store import StateStore
from tests.support.mosquitto import Mosquitto

# A Status of typical size (mqtt.md example).
STATUS = {
    "device_id": "xa-phu-loc-cum-01", "online": True, "at": "2026-11-23T06:00:01+07:00",
    "agent_version": "0.3.0", "uptime_s": 8123, "power": "mains",
    "playing": {"source": "media", "priority": "scheduled", "program_id": "p-1",
                "media_id": "m-101", "title": "Bản tin sáng",
                "started_at": "2026-11-23T06:00:00+07:00"},
    "volume": 80, "amplifier": "on", "mqtt": {"connected": True},
    "source": {"reachable": True, "last_sync_at": "2026-11-23T05:59:00+07:00",
               "schedule_version": 17},
    "cache": {"items": 42, "bytes": 81234567, "free_bytes": 1234567890, "missing": 0},
    "fm": None, "faults": [],
    "system": {"cpu_temp_c": 51.2, "load1": 0.12, "disk_free_bytes": 123,
               "clock_synced": True}}


class CountingProxy:
    """Forwards loopback connections to ``target`` and counts the bytes each way."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, "up"),
                             name="proxy-up", daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"),
                             name="proxy-down", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if direction == "up":
                        self.up += len(data)
                    else:
                        self.down += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down


@dataclass
class Run:
    name: str
    proxy: CountingProxy
    link: MqttLink
    connect_bytes: int = 0
    window: tuple[int, int] = (0, 0)


def make_run(name: str, broker: Mosquitto, device: str, tls: bool, workdir: Path,
             heartbeat_s: float, keepalive_s: float) -> Run:
    proxy = CountingProxy((broker.host, broker.tls_port if tls else broker.port))
    clock = SystemClock()
    store = StateStore(workdir / f"{device}.db")
    journal = Journal(store, clock, ZoneInfo("Asia/Ho_Chi_Minh"))
    faults = FaultRegistry(clock.now)
    metrics = AgentMetrics(clock)
    validator = CommandValidator(None, CommandLimits(), store, clock, lambda _m: False,
                                 device_id=device, groups=("g1",))
    intake = CommandIntake(validator, journal, metrics, faults, clock, lambda _c: None, None,
                           clock_wait_s=60.0)
    uri = f"mqtts://localhost:{proxy.port}" if tls else f"mqtt://127.0.0.1:{proxy.port}"
    settings = MqttSettings(brokers=(uri,), username=device, password=broker.passwords[device],
                            ca_file=broker.ca_file, heartbeat_s=heartbeat_s,
                            keepalive_s=keepalive_s)
    link = MqttLink(settings, device, ("g1",), store, journal, clock,
                    lambda: {**STATUS, "device_id": device}, intake, faults, metrics)
    return Run(name, proxy, link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument("--heartbeat", type=float, default=60.0)
    parser.add_argument("--keepalive", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = Mosquitto.start(workdir / "broker", {"dev-plain": ["g1"], "dev-tls": ["g1"]})
        runs = [make_run("mqtt:// (plain)", broker, "dev-plain", False, workdir,
                         args.heartbeat, args.keepalive),
                make_run("mqtts:// (TLS 1.3)", broker, "dev-tls", True, workdir,
                         args.heartbeat, args.keepalive)]
        try:
            for run in runs:
                run.link.start()
            deadline = time.monotonic() + 15
            while not all(r.link.connected for r in runs):
                if time.monotonic() > deadline:
                    raise SystemExit("links did not connect")
                time.sleep(0.05)
            time.sleep(1.0)  # birth Status delivered
            start = [r.proxy.counts() for r in runs]
            for run, (up, down) in zip(runs, start, strict=True):
                run.connect_bytes = up + down
            time.sleep(args.seconds)
            for run, (up0, down0) in zip(runs, start, strict=True):
                up1, down1 = run.proxy.counts()
                run.window = (up1 - up0, down1 - down0)
        finally:
            for run in runs:
                run.link.stop(3.0)
            broker.stop()
    print(f"heartbeat_s={args.heartbeat:g}, keepalive_s={args.keepalive:g}, "
          f"window {args.seconds:g} s, Status payload "
          f"{len(json.dumps(STATUS, ensure_ascii=False).encode())} bytes\n")
    print("| transport | connect + birth bytes | window bytes up | window bytes down "
          "| idle bytes/hour |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        up, down = run.window
        per_hour = (up + down) * 3600 / args.seconds
        print(f"| {run.name} | {run.connect_bytes} | {up} | {down} | {per_hour:,.0f} |")


if __name__ == "__main__":
    main()
