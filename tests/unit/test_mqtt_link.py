"""MqttLink against a real Mosquitto (tests/support/mosquitto.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTErrorCode
from prometheus_client.parser import text_string_to_metric_families

from agent.mqtt.commands import Command
from agent.state.journal import MQTT
from tests.support.mosquitto import Mosquitto, TestClient
from tests.support.mqtt_rig import (
    DEATH_KEEPALIVE_S,
    GROUP,
    Agent,
    AgentFactory,
    online,
    payload,
    signed_command,
)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_birth_follows_subscriptions_and_is_retained(broker: Mosquitto, agents: AgentFactory,
                                                     protocol: str) -> None:
    agent = agents(broker, "dev-0" if protocol == "5" else "dev-1", protocol=protocol)
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        # The instant online:true is seen, a command must already be received.
        command = signed_command()
        central.publish(agent.topic("commands"), payload(command))
        ack = central.expect(agent.topic("acks")).json()
        assert (ack["command_id"], ack["status"], ack["reason"]) == \
            (command["id"], "accepted", None)
        assert agent.commands.get(timeout=5).id == command["id"]
    with broker.central(agent.topic("state")) as late:
        retained = late.expect(agent.topic("state"))
        assert retained.retain and retained.json()["online"] is True
        assert retained.json()["mqtt"] == {"connected": True}


def test_heartbeat_and_status_changes(broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-2", heartbeat_s=1.0)
    with broker.central(agent.topic("state")) as central:
        agent.link.start()
        for _ in range(3):  # birth, then heartbeats with nothing changing
            assert central.expect(agent.topic("state")).json()["volume"] == 70
        agent.volume = 55
        agent.link.status_changed()
        central.expect(agent.topic("state"), predicate=lambda s: s["volume"] == 55)


def test_status_changes_are_published_without_waiting_for_the_heartbeat(
        broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-3", heartbeat_s=3600.0)
    with broker.central(agent.topic("state")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        for volume in range(40, 50):  # a burst: coalesced, the last value arrives
            agent.volume = volume
            agent.link.status_changed()
        central.expect(agent.topic("state"), predicate=lambda s: s["volume"] == 49)


def test_group_commands_are_received(broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-4")
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        command = signed_command("set_volume", {"volume": 30})
        central.publish(f"tt/groups/{GROUP}/commands", payload(command))
        assert central.expect(agent.topic("acks")).json()["status"] == "accepted"
        assert agent.commands.get(timeout=5).args == {"volume": 30}


def test_clean_stop_leaves_retained_offline(broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-5")
    with broker.central(agent.topic("state")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        agent.link.stop(5.0)
        assert not agent.link.connected
        assert central.expect(agent.topic("state")).json() == \
            {"device_id": "dev-5", "online": False}
    with broker.central(agent.topic("state")) as late:
        retained = late.expect(agent.topic("state"))
        assert retained.retain and retained.json()["online"] is False


CHILD = """
import sys, time
from pathlib import Path
from tests.support.mosquitto import Mosquitto, TestClient
from tests.support.mqtt_rig import Agent
broker = Mosquitto(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), 0, Path(sys.argv[3]),
                   {sys.argv[4]: sys.argv[5]})
agent = Agent(broker, Path(sys.argv[6]), sys.argv[4], keepalive_s=float(sys.argv[7]))
agent.link.start()
agent.wait_connected()
print("connected", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["sigkill", "sigstop"])
def test_abrupt_death_leaves_the_last_will(broker: Mosquitto, tmp_path: Path,
                                           how: signal.Signals) -> None:
    """SIGKILL: the kernel closes the socket. SIGSTOP: a hung agent or a cut cable, the
    socket stays open and only the keepalive tells the broker."""
    device = "dev-6" if how == signal.SIGKILL else "dev-17"
    with broker.central(f"tt/devices/{device}/state") as central:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(broker.directory), str(broker.port),
             str(broker.ca_file), device, broker.passwords[device], str(tmp_path / "child.db"),
             str(DEATH_KEEPALIVE_S)],
            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "connected\n"
            central.expect(f"tt/devices/{device}/state", predicate=online)
            child.send_signal(how)
            # mqtt.md: the will appears within 1.5 x keepalive. Mosquitto 2.0.11 checks
            # keepalives coarsely: seen up to 5 s late on a busy machine, hence the slack.
            will = central.expect(f"tt/devices/{device}/state",
                                  timeout=1.5 * DEATH_KEEPALIVE_S + 7)
            assert will.json() == {"device_id": device, "online": False}
        finally:
            child.kill()
            child.wait(10)


def expect_events(central: TestClient, agent: Agent, count: int) -> list[int]:
    return [central.expect(agent.topic("events"), timeout=20).json()["n"] for _ in range(count)]


def test_events_queued_during_a_broker_outage_arrive_in_order(own_broker: Mosquitto,
                                                              agents: AgentFactory) -> None:
    agent = agents(own_broker, "dev-7")
    with own_broker.central(agent.topic("events"), session_id="central-7") as central:
        agent.link.start()
        agent.wait_connected()
        agent.journal.event("config_reloaded", n=0)
        assert expect_events(central, agent, 1) == [0]
        own_broker.stop()
        agent.wait_connected(False)
        for n in range(1, 31):
            agent.journal.event("media_cached", n=n)
        assert agent.store.depth(MQTT) == 30
        own_broker.restart()
        assert expect_events(central, agent, 30) == list(range(1, 31))
    deadline = time.monotonic() + 10
    while agent.store.depth(MQTT):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_outbox_survives_a_restart_of_the_agent_while_the_broker_is_down(
        own_broker: Mosquitto, agents: AgentFactory, tmp_path: Path) -> None:
    db = tmp_path / "shared-state.db"
    first = agents(own_broker, "dev-8", db=db)
    with own_broker.central(first.topic("events"), session_id="central-8") as central:
        first.link.start()
        first.wait_connected()
        own_broker.stop()
        first.wait_connected(False)
        for n in range(10):
            first.journal.event("media_cached", n=n)
        first.close()
        second = agents(own_broker, "dev-8", db=db)
        second.link.start()
        second.journal.event("media_cached", n=10)
        own_broker.restart()
        second.journal.event("media_cached", n=11)
        assert expect_events(central, second, 12) == list(range(12))


def test_every_rejection_is_acked_with_its_code(broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-9")
    unsigned = signed_command()
    del unsigned["signature"]
    replayed = signed_command()
    ten_mb = {"id": str(uuid.uuid4()), "type": "sync_now", "pad": "x" * 10_000_000}
    cases = [
        (signed_command("reboot"), "unknown_type"),
        (signed_command("set_volume", {"volume": 150}), "bad_args"),
        (unsigned, "bad_signature"),
        (signed_command(expires_at="2020-01-01T00:00:00+07:00"), "expired"),
        (signed_command(issued_at="2020-01-01T00:00:00+07:00", expires_at=None), "too_old"),
        (signed_command("play_now", {"media_id": "m-unknown"}), "media_not_cached"),
        (ten_mb, "too_large"),
    ]
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        for command, code in cases:
            central.publish(agent.topic("commands"), payload(command))
            ack = central.expect(agent.topic("acks"), timeout=20).json()
            assert (ack["command_id"], ack["status"]) == (command["id"], "rejected")
            assert ack["reason"].startswith(f"{code}: ")
        central.publish(agent.topic("commands"), payload(replayed))
        central.publish(agent.topic("commands"), payload(replayed))
        assert central.expect(agent.topic("acks")).json()["status"] == "accepted"
        ack = central.expect(agent.topic("acks")).json()
        assert ack["status"] == "rejected" and ack["reason"].startswith("replay: ")
        for garbage in (b"{oops", b"\x00\xff", b'{"no": "id"}'):
            central.publish(agent.topic("commands"), garbage)
        marker = signed_command()
        central.publish(agent.topic("commands"), payload(marker))
        assert central.expect(agent.topic("acks")).json()["command_id"] == marker["id"]
    families = {f.name: f for f in text_string_to_metric_families(
        agent.metrics.render().decode())}
    dropped = sum(s.value for s in families["broadcast_agent_command_payloads_dropped"].samples
                  if s.name.endswith("_total"))
    assert dropped == 3
    assert agent.commands.qsize() == 2  # the first replayed copy and the marker, nothing else


def test_a_flood_of_commands_is_acked_without_crashing(broker: Mosquitto,
                                                       agents: AgentFactory) -> None:
    agent = agents(broker, "dev-10")
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        expected = {}
        for n in range(1000):
            command = signed_command() if n % 2 else signed_command("self_destruct")
            expected[command["id"]] = "accepted" if n % 2 else "rejected"
            central.publish(agent.topic("commands"), payload(command))
        acked: dict[str, str] = {}
        while len(acked) < len(expected):
            ack = central.expect(agent.topic("acks"), timeout=30).json()
            acked[ack["command_id"]] = ack["status"]
        assert acked == expected
        assert agent.link.connected
        assert agent.commands.qsize() == 500


def test_tls_with_password(broker: Mosquitto, agents: AgentFactory) -> None:
    agent = agents(broker, "dev-11", tls=True)
    with broker.central(agent.topic("state")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
    assert not agent.faults.is_raised("mqtt_unreachable")


def test_wrong_password_cannot_connect_and_raises_a_fault(broker: Mosquitto,
                                                          agents: AgentFactory) -> None:
    agent = agents(broker, "dev-12", tls=True, password="guessed")
    agent.link.start()
    deadline = time.monotonic() + 15
    while not agent.faults.is_raised("mqtt_unreachable"):
        assert time.monotonic() < deadline, "fault mqtt_unreachable not raised"
        time.sleep(0.05)
    assert not agent.link.connected
    (fault,) = agent.faults.active()
    assert "refused" in fault.message and broker.tls_uri in fault.message


def test_unreachable_broker_raises_then_clears_the_fault(own_broker: Mosquitto,
                                                         agents: AgentFactory) -> None:
    agent = agents(own_broker, "dev-13")
    own_broker.stop()
    agent.link.start()
    deadline = time.monotonic() + 15
    while not agent.faults.is_raised("mqtt_unreachable"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    own_broker.restart()
    agent.wait_connected()
    assert not agent.faults.is_raised("mqtt_unreachable")


def test_acl_keeps_a_device_off_another_devices_commands(broker: Mosquitto) -> None:
    with broker.central("tt/#") as central:
        intruder = broker.client("dev-14")
        intruder.connect()
        try:
            intruder.publish("tt/devices/dev-15/commands", payload(signed_command()))
            intruder.publish("tt/devices/dev-14/events", b'{"marker": true}')
        finally:
            intruder.close()
        # Mosquitto keeps one client's messages in order: had the command got through,
        # it would arrive before the marker.
        first = central.messages.get(timeout=10)
        while first.retain:  # retained states of earlier tests
            first = central.messages.get(timeout=10)
        assert first.topic == "tt/devices/dev-14/events"


def test_a_failing_command_handler_acks_failed_and_keeps_the_link(broker: Mosquitto,
                                                                  agents: AgentFactory) -> None:
    def broken_handler(_command: Command) -> None:
        raise RuntimeError("control loop gone")

    agent = agents(broker, "dev-16", on_command=broken_handler)
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        central.publish(agent.topic("commands"), payload(signed_command()))
        acks = [central.expect(agent.topic("acks")).json() for _ in range(2)]
        assert [a["status"] for a in acks] == ["accepted", "failed"]
        assert acks[1]["reason"] == "internal: control loop gone"
        assert agent.link.connected


def test_an_internal_error_while_connecting_is_a_fault_and_retried_soon(
        broker: Mosquitto, agents: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug in the connection code (ours or paho's) is told, and retried after the first
    # backoff step: not after max_backoff_s, a whole round of minutes on a controller.
    real_connect = paho.Client.connect
    calls: list[float] = []

    def connect_failing_once(client: paho.Client, *args: Any,
                             **kwargs: Any) -> MQTTErrorCode:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("a bug in the connection code")
        return real_connect(client, *args, **kwargs)

    monkeypatch.setattr(paho.Client, "connect", connect_failing_once)
    agent = agents(broker, "dev-18", max_backoff_s=60.0)
    agent.link.start()
    agent.wait_connected(timeout=10)
    assert len(calls) == 2 and calls[1] - calls[0] < 2.0
    assert agent.faults.is_raised("internal_error")
