"""MQTT commands end to end, signed, through a real Mosquitto (TLS, ACL) into the real
agent: sync_now reaching the real source, every rejection reason (acked ``rejected``, never
executed), a flood of 1000 commands, group commands, and the ACL keeping a device off
another device's command topic. What each command does once accepted (what airs, its acks
and report, volume, amplifier) is control logic, checked on the simulated core in
tests/simulation/test_commands.py."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import canonical_json, sign
from tests.conftest import AgentFactory, Source, metric, wait_ready
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import (
    DEVICE,
    GROUP,
    KEY,
    OTHER_DEVICE,
    CheckedCentral,
    epoch,
    mqtt_config,
    start_online,
)
from tests.support.mosquitto import PREFIX, Mosquitto, TestClient

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
COMMANDS_TOPIC = f"{PREFIX}/devices/{DEVICE}/commands"
ALERT_S = 1.5
FLOOD = 1000
FLOOD_RSS_GROWTH_BYTES = 30 * 1024 * 1024


def command(type_: str, args: dict[str, Any], *, issued_s_ago: float = 0.0,
            expires_in_s: float = 120.0, key: Ed25519PrivateKey | None = KEY,
            **extra: Any) -> dict[str, Any]:
    """A command with chosen times, signed with ``key`` (unsigned when None)."""
    issued = datetime.now(TZ) - timedelta(seconds=issued_s_ago)
    cmd: dict[str, Any] = {
        "id": f"c-{time.monotonic_ns()}", "type": type_, "args": args, "to": DEVICE,
        "issued_at": issued.isoformat(timespec="milliseconds"),
        "expires_at": (issued + timedelta(seconds=issued_s_ago + expires_in_s)).isoformat(
            timespec="milliseconds"), **extra}
    if key is not None:
        cmd["signature"] = sign(cmd, key)
    return cmd


@pytest.fixture
def alert(tmp_path: Path, source: Source) -> None:
    source.add("m-alert", media.tone(tmp_path / "alert.wav", 1500, ALERT_S))
    source.publish([])


def restart(agent: AgentProcess, central: CheckedCentral) -> None:
    """Stop and start the agent; returns once the central has seen it online again."""
    seen = len(central.payloads("state"))
    assert agent.stop() == 0
    agent.start()
    wait_for(lambda: any(s["online"] for s in central.payloads("state")[seen:]), 20, 0.05,
             "online again after the restart")


# --- each command type --------------------------------------------------------------------

def test_sync_now_fetches_the_schedule_at_once(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central, source={"poll_interval_s": 300})
    wait_ready(agent, source.version)
    before = source.stats()["requests"].get("schedule", 0)
    assert before >= 1
    cmd = central.command("sync_now", {})
    central.send_accepted(cmd)
    central.wait_ack(cmd["id"], "completed", timeout=3)
    wait_for(lambda: source.stats()["requests"].get("schedule", 0) > before, 5, 0.1,
             "a schedule request after sync_now")


# --- rejections ---------------------------------------------------------------------------

def test_every_rejection_is_acked_with_its_reason_and_never_executed(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral, raw_client: TestClient, alert: None) -> None:
    agent = start_online(agent_factory, broker, central)
    wait_ready(agent, source.version)
    first = central.command("set_volume", {"volume": 60})
    second = central.command("set_volume", {"volume": 70})
    for cmd in (first, second):
        central.send_accepted(cmd)
        central.wait_ack(cmd["id"], "completed", timeout=3)
    rejected = {
        "unknown_type": command("reboot", {}),
        "bad_args": command("set_volume", {"volume": 150}),
        "bad_signature": command("set_volume", {"volume": 11}, key=None),
        "expired": command("set_volume", {"volume": 13}, issued_s_ago=60, expires_in_s=-30),
        "too_old": command("set_volume", {"volume": 14}, issued_s_ago=400),
        "media_not_cached": command("emergency", {"media_id": "m-nowhere"}),
        "replay": first,
        "too_large": command("set_volume", {"volume": 15}, padding="x" * 10_000_000),
        "wrong_target": command("set_volume", {"volume": 16}, to=OTHER_DEVICE),
        "clock_skew": command("set_volume", {"volume": 17}, issued_s_ago=-600,
                              expires_in_s=1200),
    }
    wrong = command("set_volume", {"volume": 12}, key=None)
    wrong["signature"] = sign(wrong, Ed25519PrivateKey.generate())
    cases = [*rejected.items(), ("bad_signature", wrong)]
    for code, cmd in cases:
        central.send(cmd)
        ack = central.wait_ack(cmd["id"], "rejected", timeout=1.0 if code != "too_large" else 5)
        assert ack["reason"].startswith(f"{code}: "), (code, ack)

    # Broken JSON that still shows its id is rejected to its sender; without an id it is
    # dropped and counted.
    raw_client.publish(COMMANDS_TOPIC, b'{"id": "c-broken", "type": "stop", "args": ')
    ack = central.wait_ack("c-broken", "rejected", timeout=1.0)
    assert ack["reason"].startswith("bad_json: ")
    raw_client.publish(COMMANDS_TOPIC, canonical_json({"type": "stop", "args": {}}))
    raw_client.publish(COMMANDS_TOPIC, b'{"type": "stop", ')
    wait_for(lambda: metric(agent, "command_payloads_dropped_total", reason="bad_json") == 2,
             3, 0.1, "two bad_json payloads without an id dropped and counted")

    restart(agent, central)
    central.send(second)
    ack = central.wait_ack(second["id"], "rejected", timeout=1.0)
    assert ack["reason"].startswith("replay: "), "a seen id was forgotten by the restart"

    time.sleep(1.0)  # anything wrongly executed would have acked or played by now
    assert agent.status()["volume"] == 70
    assert central.acks(first["id"]) == ["accepted", "completed", "rejected"]
    assert central.acks(second["id"]) == ["accepted", "completed", "rejected"]
    for code, cmd in cases:
        if cmd is not first:
            assert central.acks(cmd["id"]) == ["rejected"], code
    assert not central.events("play_started")


def test_a_flood_of_1000_commands_is_acked_without_harm(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central)
    wait_ready(agent, source.version)
    rss_before = agent.memory_bytes()
    flood = [central.command("set_volume", {"volume": n % 101}) for n in range(FLOOD)]
    for cmd in flood:
        central.send(cmd)
    wait_for(lambda: len(central.payloads("acks")) >= 2 * FLOOD, 120, 0.5,
             f"{2 * FLOOD} acks")
    statuses: dict[str, list[str]] = {}
    for ack in central.payloads("acks"):
        statuses.setdefault(ack["command_id"], []).append(ack["status"])
    assert [statuses.get(c["id"]) for c in flood] == [["accepted", "completed"]] * FLOOD
    assert requests.get(agent.health_url + "/healthz", timeout=5).status_code == 200
    assert agent.status()["volume"] == (FLOOD - 1) % 101
    rss_after = agent.memory_bytes()
    assert rss_after - rss_before < FLOOD_RSS_GROWTH_BYTES, \
        f"RSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB"
    for status in ("accepted", "completed"):
        assert metric(agent, "commands_total", type="set_volume", status=status) == FLOOD


# --- groups and the ACL -------------------------------------------------------------------

def test_group_commands_are_executed(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral, raw_client: TestClient) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central, groups=[GROUP])
    cmd = central.command("set_volume", {"volume": 33}, to=f"group:{GROUP}")
    raw_client.publish(f"{PREFIX}/groups/{GROUP}/commands", canonical_json(cmd))
    central.wait_ack(cmd["id"], "accepted", timeout=1.0)
    central.wait_ack(cmd["id"], "completed", timeout=3)
    assert agent.status()["volume"] == 33


def test_the_acl_keeps_a_device_off_another_devices_commands(
        source: Source, agent_factory: AgentFactory, broker: Mosquitto) -> None:
    """A device's credentials cannot command another device: the broker drops the publish,
    while a command from the central right after it is received."""
    source.publish([])
    with CheckedCentral(broker, OTHER_DEVICE) as other_central:
        other = agent_factory(device_id=OTHER_DEVICE, **mqtt_config(broker, OTHER_DEVICE))
        other_central.wait_online()
        intruder = broker.client(DEVICE, tls=True)
        intruder.connect()
        try:
            forged = other_central.command("set_volume", {"volume": 5})
            intruder.publish(f"{PREFIX}/devices/{OTHER_DEVICE}/commands", canonical_json(forged))
        finally:
            intruder.close()
        genuine = other_central.command("set_volume", {"volume": 45})
        other_central.send_accepted(genuine)
        other_central.wait_ack(genuine["id"], "completed", timeout=3)
        time.sleep(0.5)
        assert other_central.acks(forged["id"]) == []
        assert other.status()["volume"] == 45
        acked_at = [epoch(a["at"]) for a in other_central.payloads("acks")]
        assert len(acked_at) == 2
