"""Ordinary field sequences that broke the first version, end to end against the real
agent process (clocked WAV sink, simulated amplifier, real Mosquitto with TLS and an ACL):
a kill right after a programme, an emergency whose media is not cached but carries a url,
hostile text next to a scheduled programme, and one group emergency on several agents at
the same instant (``start_at``)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.core.signing import canonical_json, sign
from tests.conftest import (
    UNREACHABLE_BROKER,
    AgentFactory,
    Source,
    capture_until,
    program,
    wait_ready,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import (
    GROUP,
    KEY,
    CheckedCentral,
    mqtt_config,
    start_online,
)
from tests.support.mosquitto import PREFIX, Mosquitto
from tests.support.streams import PacedStream
from tests.support.wavfile import SILENCE, assert_starts_on_time, tone_frequency

GROUP_AGENTS = ("xa-test-01", "xa-test-05", "xa-test-06")
SAME_INSTANT_S = 0.002  # neighbouring clusters sound as one


def test_a_kill_right_after_a_programme_and_a_restart_never_air_it_again(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """The media entry has no duration_s (the contract allows it): the first version took
    such a window as lasting a day and replayed it at every restart."""
    entry = source.add("m-1", media.tone(tmp_path / "t.wav", 1000, 2.0))
    source.media["m-1"] = {k: v for k, v in entry.items() if k != "duration_s"}
    start = whole_second(6)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory(mqtt=UNREACHABLE_BROKER)  # the default grace: 120 s
    wait_ready(agent, source.version)
    wait_for(lambda: time.time() > start + 1 and agent.status()["playing"] is None,
             start + 15 - time.time(), 0.02, "p-1 over")
    agent.kill()
    agent.start()
    wait_ready(agent, source.version)
    restarted = time.time()

    capture = capture_until(agent, restarted + 4.0)  # a replay would start within ~1 s
    assert capture.first_non_silent(SILENCE, after_epoch=capture.start_epoch) is None, \
        "the programme aired again after the restart"
    reports = wait_for(lambda: [r for r in source.play_reports() if r["program_id"] == "p-1"],
                       10, 0.2, "the play report of p-1")
    time.sleep(1.0)  # a second report, if any, would have been sent with the first
    assert [r["outcome"] for r in source.play_reports() if r["program_id"] == "p-1"] == \
        ["completed"], reports


def test_an_emergency_for_uncached_media_plays_from_its_url(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.publish([])
    agent = start_online(agent_factory, broker, central)
    with PacedStream.tone(tmp_path, 880.0) as stream:
        cmd = central.command("emergency", {"media_id": "m-not-here", "url": stream.url})
        central.send_accepted(cmd)
        sent = time.time()
        wait_for(lambda: (agent.status()["playing"] or {}).get("url") == stream.url, 10,
                 0.05, "the emergency playing its url")
        capture = capture_until(agent, time.time() + 3.0)
        sounding = capture.segment(time.time() - 2.0, 1.0)
        assert tone_frequency(sounding, capture.rate) == pytest.approx(880.0, rel=0.01)
        stop = central.command("stop", {})
        central.send_accepted(stop)
        central.wait_ack(cmd["id"], "completed", timeout=10)
    [report] = wait_for(lambda: [r for r in source.play_reports()
                                 if r["program_id"] == f"cmd:{cmd['id']}"], 10, 0.2,
                        "the emergency's play report")
    assert (report["url"], report["priority"]) == (stream.url, "emergency")
    assert report["played_s"] > 1.0
    print(f"emergency from its url: on air within {time.time() - sent:.1f} s of the publish")


HOSTILE_TEXTS = {"nul": "nul \x00 inside", "too-long": "x" * 2001,
                 "escape": "\x1b[2J clear screen"}


def test_hostile_text_is_rejected_and_the_programme_plays_on_its_sample(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    """Each hostile text, sent to one agent before its programme, is rejected on its own."""
    source.add("m-1", media.tone(tmp_path / "t.wav", 1000, 2.0))
    start = whole_second(8)
    source.publish([program("p-1", ["m-1"], start)])
    agent = start_online(agent_factory, broker, central)
    wait_ready(agent, source.version)
    for name, text in HOSTILE_TEXTS.items():
        hostile = central.command("emergency", {"text": text})
        central.send(hostile)
        ack = central.wait_ack(hostile["id"], "rejected", timeout=2)
        assert ack["reason"].startswith("bad_args"), (name, ack)

    capture = capture_until(agent, start + 2.5)
    assert_starts_on_time(capture, start, 1000)
    assert agent.fault_codes().isdisjoint({"play_failed", "dead_air"})


def group_emergency(start_at: float, args: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    at = datetime.fromtimestamp(start_at, now.tzinfo)
    cmd: dict[str, Any] = {
        "id": f"g-{time.monotonic_ns()}", "type": "emergency", "to": f"group:{GROUP}",
        "args": {**args, "start_at": at.isoformat(timespec="milliseconds")},
        "issued_at": now.isoformat(timespec="milliseconds")}
    cmd["signature"] = sign(cmd, KEY)
    return cmd


def test_a_group_emergency_with_start_at_sounds_at_the_same_instant_everywhere(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """Its chime's first sample leaves every card at start_at (the agents other than
    DEVICE have no schedule at this source; an emergency needs none)."""
    source.publish([])
    broker = Mosquitto.start(tmp_path / "group-broker",
                             {device: [GROUP] for device in GROUP_AGENTS})
    try:
        agents: list[AgentProcess] = []
        for device in GROUP_AGENTS:
            with CheckedCentral(broker, device) as central:
                agents.append(agent_factory(device_id=device, groups=[GROUP],
                                            **mqtt_config(broker, device)))
                central.wait_online()
        start_at = round(time.time() + 3.0, 3)
        with broker.central() as client:
            client.publish(f"{PREFIX}/groups/{GROUP}/commands",
                           canonical_json(group_emergency(start_at, {"text": "Bà con chú ý."})))
        for device, agent in zip(GROUP_AGENTS, agents, strict=True):
            capture = capture_until(agent, start_at + 2.0)
            first = capture.first_non_silent(SILENCE, after_epoch=start_at - 1.0)
            assert first is not None, f"{device}: nothing sounded"
            error = capture.time_of(first) - start_at
            print(f"{device}: first sample {error * 1000:+.2f} ms from start_at")
            assert abs(error) <= SAME_INSTANT_S
    finally:
        broker.stop()
