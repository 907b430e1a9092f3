"""The central server's side of the MQTT e2e tests: a schema-checking client, the devices
and key of the test broker, and assertions on what the card and the central received."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import AgentFactory
from tests.support.agentproc import AgentProcess
from tests.support.central import Central, agent_mqtt_config
from tests.support.mosquitto import PREFIX, Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import Capture, rms_dbfs

DEVICE = "xa-test-01"
OTHER_DEVICE = "xa-test-02"
GROUP = "huyen-phu-loc"
KEY = Ed25519PrivateKey.generate()
KEEPALIVE_S = 5.0
HEARTBEAT_S = 5.0
STATE_TOPIC = f"{PREFIX}/devices/{DEVICE}/state"
SCHEMA_OF_LEAF = {"state": "state", "events": "event", "acks": "ack"}
STATUS_COALESCE_S = 1.0  # mqtt.STATUS_MIN_INTERVAL_S


class CheckedCentral(Central):
    """The central server's client, validating every message against its schema as it is
    received; ``persistent``: a session that keeps its subscriptions and queued messages
    across a broker restart, as a real central server's would."""

    def __init__(self, broker: Mosquitto, device_id: str = DEVICE,
                 key: Ed25519PrivateKey | None = KEY, persistent: bool = False) -> None:
        super().__init__(broker, device_id, key, tls=True)
        if persistent:
            self._client = broker.client(tls=True, session_id=f"central-{uuid.uuid4().hex[:8]}")
        self.arrivals: list[float] = []  # monotonic receive time of each received message

    def __enter__(self) -> CheckedCentral:
        super().__enter__()
        return self

    def _drain(self) -> None:
        before = len(self.received)
        super()._drain()
        for message in self.received[before:]:
            self.arrivals.append(time.monotonic())
            validate(SCHEMA_OF_LEAF[message.topic.rsplit("/", 1)[1]], message.json())

    def states(self) -> list[dict[str, Any]]:
        return [s for s in self.payloads("state") if s["online"]]

    def events(self, *types: str) -> list[dict[str, Any]]:
        """Events received so far (of ``types`` when given), first copy of each id."""
        seen: set[str] = set()
        found = []
        for event in self.payloads("events"):
            if event["id"] not in seen and (not types or event["type"] in types):
                seen.add(event["id"])
                found.append(event)
        return found

    def send_accepted(self, cmd: dict[str, Any]) -> None:
        """Publish ``cmd``; its ``accepted`` ack must arrive within one second (mqtt.md)."""
        self.send(cmd)
        self.wait_ack(cmd["id"], "accepted", timeout=1.0)


def mqtt_config(broker: Mosquitto, device_id: str = DEVICE, **mqtt: Any) -> dict[str, Any]:
    """Config overrides of an agent on ``broker`` over TLS, commands signed with KEY, short
    keepalive and heartbeat."""
    config = agent_mqtt_config(broker, device_id, KEY, tls=True)
    config["mqtt"].update(keepalive_s=KEEPALIVE_S, heartbeat_s=HEARTBEAT_S, **mqtt)
    return config


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def start_online(agent_factory: AgentFactory, broker: Mosquitto, central: CheckedCentral,
                 **overrides: Any) -> AgentProcess:
    """A real agent on ``broker``; returns once the central has seen it online."""
    agent = agent_factory(**mqtt_config(broker), **overrides)
    central.wait_online()
    return agent


def assert_no_gap(capture: Capture, start: float, seconds: float, level_dbfs: float) -> None:
    """Every 20 ms of ``[start, start + seconds]`` carries the tone at its level, in what the
    agent wrote (Capture.as_written: the card's own underruns are the machine's)."""
    block = 0.02
    written = capture.as_written()
    for n in range(int(seconds / block)):
        at = start + n * block
        found = rms_dbfs(written.segment(at, block))
        assert found == pytest.approx(level_dbfs, abs=1.0), \
            f"gap or level change at {at:.3f}: {found:.1f} dBFS, expected {level_dbfs:.1f}"


def assert_play_pairs_in_order(central: CheckedCentral) -> list[tuple[str, str]]:
    """Every event arrived in the order it was raised (``at``), and each play_started is
    followed by the play_finished of the same program; returns (type, program_id)s."""
    events = central.events()
    stamps = [epoch(e["at"]) for e in events]
    assert stamps == sorted(stamps), f"events out of order: {[e['type'] for e in events]}"
    plays = [(e["type"], e["program_id"] if e["type"] == "play_started"
              else e["record"]["program_id"])
             for e in events if e["type"] in ("play_started", "play_finished")]
    assert len(plays) % 2 == 0, f"unpaired play events: {plays}"
    for started, finished in zip(plays[::2], plays[1::2], strict=True):
        assert (started[0], finished[0]) == ("play_started", "play_finished"), plays
        assert started[1] == finished[1], plays
    return plays
