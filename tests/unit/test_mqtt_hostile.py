"""MqttLink under a hostile or broken setup: bad TLS files, a refused subscription, a flood
of bad commands (real Mosquitto)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.addresses import parse_broker_uri
from agent.mqtt.session import Session
from agent.state.journal import MQTT
from tests.support.agentproc import wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_rig import GROUP, AgentFactory, online, payload, signed_command

WAIT_S = 30.0



def test_a_malformed_ca_file_raises_mqtt_tls_and_the_link_recovers_once_fixed(
        broker: Mosquitto, agents: AgentFactory, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    agent = agents(broker, "dev-17", tls=True, ca_file=ca_file)
    agent.link.start()
    wait_for(lambda: agent.faults.is_raised("mqtt_tls"), WAIT_S, what="fault mqtt_tls")
    (fault,) = [f for f in agent.faults.active() if f.code == "mqtt_tls"]
    assert "cannot set up TLS" in fault.message and broker.tls_uri in fault.message
    assert not agent.link.connected
    ca_file.write_bytes(broker.ca_file.read_bytes())  # the technician fixes it
    agent.wait_connected(timeout=WAIT_S)
    assert not agent.faults.is_raised("mqtt_tls")


def test_a_refused_subscription_is_not_connected(broker: Mosquitto, agents: AgentFactory) -> None:
    """A SUBACK failure (0x80: the broker's ACL refuses a command topic) ends the attempt:
    commands on that topic would never arrive. (Mosquitto itself grants such
    subscriptions and drops the messages, so the SUBACK is fed to the callback here.)"""
    agent = agents(broker, "dev-18")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="dev-18")
    session = Session(parse_broker_uri(broker.uri), client)
    session.subscribe_mid = 7
    granted = ReasonCode(PacketTypes.SUBACK, identifier=1)
    refused = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
    agent.link._on_subscribe(client, session, 7, [granted, refused], None)
    assert session.ended.is_set() and not session.subscribed.is_set()
    assert f"refused the subscription to tt/groups/{GROUP}/commands" in session.error
    agent.link._on_subscribe(client, session, 7, [granted, granted], None)
    assert session.subscribed.is_set()


def test_a_flood_of_bad_commands_does_not_hold_up_a_good_one(broker: Mosquitto,
                                                             agents: AgentFactory) -> None:
    agent = agents(broker, "dev-19")
    with broker.central(agent.topic("state"), agent.topic("acks")) as central:
        agent.link.start()
        central.expect(agent.topic("state"), predicate=online)
        for _ in range(2_000):
            unsigned = signed_command()
            del unsigned["signature"]
            central.publish(agent.topic("commands"), payload(unsigned))
        oversized = {"id": str(uuid.uuid4()), "type": "sync_now", "pad": "x" * 70_000}
        for _ in range(200):
            central.publish(agent.topic("commands"), json.dumps(oversized).encode())
        good = signed_command()
        central.publish(agent.topic("commands"), payload(good))
        before = 0
        while True:
            ack = central.expect(agent.topic("acks"), timeout=WAIT_S).json()
            if ack["command_id"] == good["id"]:
                break
            before += 1
        assert ack["status"] == "accepted"
        # Good acks go ahead of the rejections' (acked a few dozen a second): the good one
        # overtakes most of the 2,200 queued before it, however loaded the machine.
        assert before < 1_100
        assert agent.commands.get(timeout=WAIT_S).id == good["id"]
        assert agent.store.depth(MQTT) < 2_200
