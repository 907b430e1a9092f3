"""The MQTT contract end to end (mqtt.md): the real agent process against a real Mosquitto
with TLS, passwords and an ACL. Birth after subscribing, heartbeat, Status on change, the
last will on kill -9, the offline Status on a clean stop, and a broker outage (also with
an agent restart inside it) that playback never notices and that loses no event.

Every message the central receives is validated against its schema as it arrives
(:class:`CheckedCentral`); tests/test_e2e_commands.py and tests/test_e2e_health.py share
the fixtures of this module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central import Central, agent_mqtt_config
from tests.support.mosquitto import PREFIX, Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import Capture, rms_dbfs, tone_frequency

DEVICE = "xa-test-01"
OTHER_DEVICE = "xa-test-02"
GROUP = "huyen-phu-loc"
KEY = Ed25519PrivateKey.generate()
KEEPALIVE_S = 5.0
HEARTBEAT_S = 5.0
STATE_TOPIC = f"{PREFIX}/devices/{DEVICE}/state"
SCHEMA_OF_LEAF = {"state": "state", "events": "event", "acks": "ack"}
SILENCE = 64
START_TOLERANCE_S = 0.005
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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto.start(tmp_path / "mosquitto", {DEVICE: [GROUP], OTHER_DEVICE: []})
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def central(broker: Mosquitto) -> Iterator[CheckedCentral]:
    with CheckedCentral(broker) as client:
        yield client


def start_online(agent_factory: AgentFactory, broker: Mosquitto, central: CheckedCentral,
                 **overrides: Any) -> AgentProcess:
    """A real agent on ``broker``; returns once the central has seen it online."""
    agent = agent_factory(**mqtt_config(broker), **overrides)
    central.wait_online()
    return agent


def assert_starts_on_time(capture: Capture, start: float, frequency: float) -> None:
    index = capture.first_non_silent(SILENCE, after_epoch=start - 0.5)
    assert index is not None, f"nothing played at {start}"
    assert abs(capture.time_of(index) - start) <= START_TOLERANCE_S, \
        f"started at {capture.time_of(index):.4f}, scheduled {start}"
    found = tone_frequency(capture.segment(start + 0.1, 0.5), capture.rate)
    assert abs(found - frequency) < frequency * 0.01, f"{found} Hz, expected {frequency} Hz"


def assert_no_gap(capture: Capture, start: float, seconds: float, level_dbfs: float) -> None:
    """Every 20 ms of ``[start, start + seconds]`` carries the tone at its level."""
    block = 0.02
    for n in range(int(seconds / block)):
        at = start + n * block
        found = rms_dbfs(capture.segment(at, block))
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


# --- birth, heartbeat, Status on change ---------------------------------------------------

def test_birth_after_subscribing_heartbeat_and_status_on_change(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.add("m-1", media.tone(tmp_path / "m1.wav", 440, 2.0))
    start = whole_second(20)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory(**mqtt_config(broker))

    central.wait_online()
    cmd = central.command("set_volume", {"volume": 55})
    central.send_accepted(cmd)  # sent the moment online:true was seen: already subscribed
    central.wait_ack(cmd["id"], "completed", timeout=3)
    assert central.acks(cmd["id"]) == ["accepted", "completed"]
    wait_for(lambda: central.states()[-1]["volume"] == 55, 3, 0.05, "volume 55 in Status")

    with broker.central(STATE_TOPIC) as late:  # a newcomer gets the retained Status
        retained = late.expect(STATE_TOPIC, timeout=5)
    assert retained.retain and retained.json()["online"] is True
    validate("status", retained.json())

    wait_ready(agent, source.version)
    quiet_from = time.time()
    time.sleep(max(0.0, start - 0.5 - time.time()))
    quiet = [epoch(s["at"]) for s in central.states() if epoch(s["at"]) >= quiet_from]
    assert len(quiet) >= 2, f"{len(quiet)} Status in {start - 0.5 - quiet_from:.1f} s idle"
    gaps = np.diff([quiet_from, *quiet])
    assert max(gaps) <= HEARTBEAT_S + 1.0, f"heartbeat gaps {gaps}"

    on_air = central.wait("state", lambda s: s.get("online") and s["playing"] is not None
                          and s["playing"]["program_id"] == "p-1", timeout=5)
    assert epoch(on_air["at"]) - start <= STATUS_COALESCE_S + 0.5, "Status not change-driven"
    assert on_air["playing"]["priority"] == "scheduled"
    assert on_air["mqtt"]["connected"] is True
    idle = central.wait("state", lambda s: s.get("online") and s["playing"] is None
                        and epoch(s["at"]) > epoch(on_air["at"]), timeout=6)
    assert epoch(idle["at"]) - (start + 2.0) <= STATUS_COALESCE_S + 0.5


# --- last will and clean stop -------------------------------------------------------------

def test_kill_9_leaves_the_retained_last_will(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central)
    killed_at = time.monotonic()
    agent.kill()
    offline = central.wait("state", lambda s: s["online"] is False,
                           timeout=1.5 * KEEPALIVE_S)
    assert offline == {"device_id": DEVICE, "online": False}
    assert central.arrivals[-1] - killed_at < 1.5 * KEEPALIVE_S
    with broker.central(STATE_TOPIC) as late:
        retained = late.expect(STATE_TOPIC, timeout=5)
    assert retained.retain and retained.json() == offline
    validate("offline-state", retained.json())


def test_clean_stop_publishes_the_offline_state_itself(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central)
    assert agent.stop() == 0
    offline = central.wait("state", lambda s: s["online"] is False, timeout=2)
    assert offline == {"device_id": DEVICE, "online": False}
    with broker.central(STATE_TOPIC) as late:
        retained = late.expect(STATE_TOPIC, timeout=5)
    assert retained.retain and retained.json() == offline


# --- broker outage ------------------------------------------------------------------------

OUTAGE_S = 30.0
TONE_DBFS = -6.0 - 3.01  # media.tone's default peak level, as RMS


def test_broker_outage_is_not_heard_and_loses_no_event(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto) -> None:
    """The broker is down for 30 s from 2 s into a 10 s program; a program scheduled
    during the outage starts on its sample; every event arrives afterwards, in order."""
    source.add("m-long", media.tone(tmp_path / "long.wav", 440, 10.0))
    source.add("m-short", media.tone(tmp_path / "short.wav", 660, 3.0))
    first = whole_second(10)
    outage_at = first + 2.0
    during = first + 14.0
    source.publish([program("p-long", ["m-long"], first),
                    program("p-during", ["m-short"], during)])
    with CheckedCentral(broker, persistent=True) as central:
        agent = start_online(agent_factory, broker, central)
        wait_ready(agent, source.version)
        time.sleep(max(0.0, outage_at - time.time()))
        broker.stop()
        wait_for(lambda: agent.status()["mqtt"]["connected"] is False, 3, 0.1,
                 "the agent to notice the outage")
        capture = capture_until(agent, during + 3.2)
        assert "mqtt_unreachable" in agent.fault_codes()
        time.sleep(max(0.0, outage_at + OUTAGE_S - time.time()))
        broker.restart()

        # The agent backs off up to ~30 s after 30 s of failures (jittered doubling).
        central.wait("events", lambda e: e["type"] == "fault_cleared"
                     and e["code"] == "mqtt_unreachable", timeout=45)
        plays = assert_play_pairs_in_order(central)
    assert plays == [("play_started", "p-long"), ("play_finished", "p-long"),
                     ("play_started", "p-during"), ("play_finished", "p-during")]
    outcomes = [e["record"]["outcome"] for e in central.events("play_finished")]
    assert outcomes == ["completed", "completed"]
    assert_starts_on_time(capture, first, 440)
    assert_no_gap(capture, first + 0.05, 9.9, TONE_DBFS)
    assert_starts_on_time(capture, during, 660)
    assert_no_gap(capture, during + 0.05, 2.9, TONE_DBFS)


def test_events_raised_across_an_agent_restart_during_the_outage_all_arrive(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto) -> None:
    """Broker down, agent stopped while a program plays and started again, a program
    played by the new process, broker back: both processes' events arrive, in order."""
    source.add("m-a", media.tone(tmp_path / "a.wav", 440, 4.0))
    source.add("m-b", media.tone(tmp_path / "b.wav", 660, 2.0))
    first = whole_second(10)
    second = first + 10.0
    source.publish([program("p-a", ["m-a"], first), program("p-b", ["m-b"], second)])
    with CheckedCentral(broker, persistent=True) as central:
        agent = start_online(agent_factory, broker, central)
        wait_ready(agent, source.version)
        time.sleep(max(0.0, first + 1.0 - time.time()))
        broker.stop()
        time.sleep(1.0)
        agent.stop()  # p-a is cut: its proof of play is queued by the stopping agent
        agent.start()
        assert second - time.time() > 2.0, "the restart took too long for p-b's start"
        capture = capture_until(agent, second + 2.2)
        broker.restart()
        central.wait("events", lambda e: e["type"] == "play_finished"
                     and e["record"]["program_id"] == "p-b", timeout=20)
        plays = assert_play_pairs_in_order(central)
    finished = [(e["record"]["program_id"], e["record"]["outcome"])
                for e in central.events("play_finished")]
    assert finished[0] == ("p-a", "stopped")
    assert finished[-1] == ("p-b", "completed")
    assert plays[:2] == [("play_started", "p-a"), ("play_finished", "p-a")]
    assert_starts_on_time(capture, second, 660)
