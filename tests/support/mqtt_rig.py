"""An MqttLink with the real store, journal, faults and metrics around it, against a real
Mosquitto (tests/support/mosquitto.py), and the signed commands a central server sends."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.clock import SystemClock
from agent.core.clock_trust import ClockTrust
from agent.core.faults import FaultRegistry
from agent.core.signing import public_key_of, sign
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command, CommandLimits, CommandValidator
from agent.mqtt.intake import CommandIntake
from agent.mqtt.link import MqttLink, MqttSettings
from agent.state.journal import Journal
from agent.state.store import StateStore
from tests.support.mosquitto import Mosquitto

KEY = Ed25519PrivateKey.generate()
GROUP = "g1"
DEVICES = [f"dev-{n}" for n in range(20)]
DEATH_KEEPALIVE_S = 5


class AgentOptions(TypedDict, total=False):
    """Agent's keyword options."""

    tls: bool
    password: str | None
    heartbeat_s: float
    keepalive_s: float
    protocol: str
    on_command: Callable[[Command], None] | None
    trust: ClockTrust | None
    ca_file: Path | None
    max_backoff_s: float


class Agent:
    """An MqttLink with the real store, journal, faults and metrics around it."""

    def __init__(self, broker: Mosquitto, db: Path, device_id: str, *, tls: bool = False,
                 password: str | None = None, heartbeat_s: float = 60.0,
                 keepalive_s: float = 30.0, protocol: str = "3.1.1",
                 on_command: Callable[[Command], None] | None = None,
                 trust: ClockTrust | None = None, ca_file: Path | None = None,
                 max_backoff_s: float = 1.0) -> None:
        self.device_id = device_id
        self.clock = SystemClock()
        self.store = StateStore(db)
        self.journal = Journal(self.store, self.clock, ZoneInfo("Asia/Ho_Chi_Minh"))
        self.faults = FaultRegistry(self.clock.now)
        self.metrics = AgentMetrics(self.clock)
        self.commands: queue.Queue[Command] = queue.Queue()
        self.volume = 70
        validator = CommandValidator(public_key_of(KEY), CommandLimits(), self.store, self.clock,
                                     lambda media_id: media_id == "m-cached",
                                     device_id=device_id, groups=(GROUP,))
        self.intake = CommandIntake(validator, self.journal, self.metrics, self.faults,
                                    self.clock, on_command or self.commands.put, trust,
                                    clock_wait_s=60.0)
        settings = MqttSettings(
            brokers=(broker.tls_uri if tls else broker.uri,), username=device_id,
            password=broker.passwords[device_id] if password is None else password,
            ca_file=broker.ca_file if ca_file is None else ca_file, heartbeat_s=heartbeat_s,
            keepalive_s=keepalive_s, protocol="5" if protocol == "5" else "3.1.1",
            min_backoff_s=0.2, max_backoff_s=max_backoff_s, connect_timeout_s=5.0)
        self.link = MqttLink(settings, device_id, (GROUP,), self.store, self.journal,
                             self.clock, self.status, self.intake, self.faults, self.metrics)

    def status(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "online": True, "volume": self.volume,
                "mqtt": {"connected": self.link.connected}}

    def topic(self, leaf: str) -> str:
        return f"tt/devices/{self.device_id}/{leaf}"

    def wait_connected(self, connected: bool = True, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.link.connected != connected:
            assert time.monotonic() < deadline, f"link connected != {connected}"
            time.sleep(0.02)

    def close(self) -> None:
        self.link.stop(3.0)
        self.store.close()


class AgentFactory(Protocol):
    """The ``agents`` fixture (tests/unit/conftest.py): an Agent of ``device_id`` on
    ``broker``, with its state database at ``db`` (default: a new one)."""

    def __call__(self, broker: Mosquitto, device_id: str, db: Path | None = None,
                 **options: Unpack[AgentOptions]) -> Agent: ...


def signed_command(type_: str = "sync_now", args: dict[str, Any] | None = None,
                   **fields: Any) -> dict[str, Any]:
    now = time.time()
    doc = {"id": str(uuid.uuid4()), "type": type_, "args": args or {}, "to": f"group:{GROUP}",
           "issued_at": datetime.fromtimestamp(now, UTC).isoformat(),
           "expires_at": datetime.fromtimestamp(now + 60, UTC).isoformat(), **fields}
    doc["signature"] = sign(doc, KEY)
    return doc


def payload(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def online(doc: dict[str, Any]) -> bool:
    return doc.get("online") is True
