"""The MQTT contract end to end (mqtt.md): the real agent process against a real Mosquitto
with TLS, passwords and an ACL. Birth after subscribing, heartbeat, Status on change, the
last will on kill -9, the offline Status on a clean stop, and a broker outage (also with
an agent restart inside it) that playback never notices and that loses no event.

Every message the central receives is validated against its schema as it arrives
(:class:`CheckedCentral`); the broker and central fixtures are in tests/e2e/conftest.py,
the helpers in tests/support/central_checks.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import wait_for
from tests.support.central_checks import (
    DEVICE,
    HEARTBEAT_S,
    KEEPALIVE_S,
    STATE_TOPIC,
    STATUS_COALESCE_S,
    CheckedCentral,
    assert_no_gap,
    assert_play_pairs_in_order,
    epoch,
    mqtt_config,
    start_online,
)
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import assert_starts_on_time

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

# The broker goes down 2 s into a 6 s programme and comes back 1 s after the second,
# scheduled inside the outage, has ended: the agent's reconnect attempts (jittered
# doubling from 1 s: three within 3 s, a fourth by 7 s) fall while the programmes play, and
# every play event is raised during the outage.
OUTAGE_S = 9.0
TONE_DBFS = -6.0 - 3.01  # media.tone's default peak level, as RMS


def test_broker_outage_is_not_heard_and_loses_no_event(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto) -> None:
    """The broker is down for 9 s from 2 s into a 6 s program; a program scheduled
    during the outage starts on its sample; every event arrives afterwards, in order."""
    source.add("m-long", media.tone(tmp_path / "long.wav", 440, 6.0))
    source.add("m-short", media.tone(tmp_path / "short.wav", 660, 3.0))
    first = whole_second(10)
    outage_at = first + 2.0
    during = first + 7.0
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

        # The agent backs off up to ~16 s after 8 s of failures (jittered doubling).
        central.wait("events", lambda e: e["type"] == "fault_cleared"
                     and e["code"] == "mqtt_unreachable", timeout=45)
        plays = assert_play_pairs_in_order(central)
    assert plays == [("play_started", "p-long"), ("play_finished", "p-long"),
                     ("play_started", "p-during"), ("play_finished", "p-during")]
    outcomes = [e["record"]["outcome"] for e in central.events("play_finished")]
    assert outcomes == ["completed", "completed"]
    assert_starts_on_time(capture, first, 440)
    assert_no_gap(capture, first + 0.05, 5.9, TONE_DBFS)
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
