"""The MQTT commands' control logic (mqtt.md) on the simulated core: what each play command
airs, its acks and its play report; stop, set_volume, amplifier; fm_relay with no receiver.
The transport (signing, the broker, the ACL, rejections, a flood) is tests/e2e/test_commands.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.amplifier.sim import SimAmplifier
from tests.simulation import events as ev
from tests.simulation.scenario import Scenario, epoch
from tests.simulation.world import SETTINGS

NO_PROGRAMS = ev.Publish((), frozenset(), False)


@pytest.mark.parametrize(("type_", "args", "priority", "source_kind"), [
    ("emergency", {"media_id": "m0"}, "emergency", "media"),
    ("emergency", {"text": "Bà con chú ý, nước sông đang lên."}, "emergency", "tts"),
    ("play_now", {"media_id": "m0"}, "live", "media"),
], ids=["emergency-media", "emergency-text", "play_now-media"])
def test_play_commands_are_accepted_played_and_completed(
        tmp_path: Path, type_: str, args: dict[str, Any], priority: str,
        source_kind: str) -> None:
    sim = Scenario(tmp_path)
    sim.do(NO_PROGRAMS)
    cmd = sim.send_command(type_, **args)
    playing = sim.until(lambda: sim.on_air(f"cmd:{cmd}"), 5, "the command on air")
    assert (playing["priority"], playing["source"]) == (priority, source_kind)
    sim.until(lambda: "completed" in sim.statuses(cmd), 30, "the completed ack")
    assert sim.statuses(cmd) == ["accepted", "completed"]
    [finished] = sim.mqtt_events("play_finished")
    assert (finished["record"]["program_id"], finished["record"]["outcome"]) == (
        f"cmd:{cmd}", "completed")
    assert [name for name, _ in sim.aired() if not name.startswith("chime:")] == [f"cmd:{cmd}"]
    sim.end()


def test_play_now_url_plays_the_stream_until_stop(tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(NO_PROGRAMS)
    live = sim.send_command("play_now", url=ev.STREAMS[0])
    playing = sim.until(lambda: sim.on_air(f"cmd:{live}"), 5, "the stream on air")
    assert (playing["source"], playing["priority"], playing["url"]) == (
        "stream", "live", ev.STREAMS[0])
    sim.wait(60.0)
    assert sim.statuses(live) == ["accepted"]  # a live stream does not end itself
    assert sim.loud_s(f"cmd:{live}") > 55.0
    stop = sim.send_command("stop")
    sim.until(lambda: "completed" in sim.statuses(live), 1, "the stream's completed ack")
    assert sim.playing() is None
    assert sim.statuses(stop) == ["accepted", "completed"]
    assert sim.statuses(live) == ["accepted", "completed"]
    [finished] = sim.mqtt_events("play_finished")
    assert (finished["record"]["program_id"], finished["record"]["outcome"]) == (
        f"cmd:{live}", "stopped")
    sim.end()


def test_set_volume_is_persisted_across_a_restart(tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(NO_PROGRAMS)
    assert sim.boot.loop.snapshot()["volume"] == SETTINGS.default_volume
    cmd = sim.send_command("set_volume", volume=40)
    sim.until(lambda: "completed" in sim.statuses(cmd), 1, "the completed ack")
    assert sim.boot.loop.snapshot()["volume"] == 40
    sim.do(ev.Restart(3.0, power_cut=False))
    assert sim.boot.loop.snapshot()["volume"] == 40
    sim.do(ev.Restart(3.0, power_cut=True))
    assert sim.boot.loop.snapshot()["volume"] == 40
    sim.end()


def test_fm_relay_without_a_receiver_fails_cleanly(tmp_path: Path) -> None:
    sim = Scenario(tmp_path, has_tuner=False)  # fm.backend: none
    sim.do(NO_PROGRAMS)
    cmd = sim.send_command("fm_relay", frequency_mhz=100.0, duration_s=5)
    sim.until(lambda: "failed" in sim.statuses(cmd), 5, "the failed ack")
    assert sim.statuses(cmd) == ["accepted", "failed"]
    assert sim.acks(cmd)[-1]["reason"].startswith("play_failed: ")
    fault = sim.fault("sdr_missing")
    assert fault is not None and fault.severity == "error"  # /healthz: 503
    [raised] = [e for e in sim.mqtt_events("fault_raised") if e["code"] == "sdr_missing"]
    assert raised["severity"] == "error"
    assert sim.playing() is None
    assert [r["outcome"] for r in sim.plays(f"cmd:{cmd}")] == ["failed"]
    assert sim.loud_s(f"cmd:{cmd}") == 0.0
    sim.end()


def _power(sim: Scenario) -> list[tuple[float, bool]]:
    """The sim amplifier's transitions: (wall time, on)."""
    assert isinstance(sim.boot.amplifier, SimAmplifier)
    lines = sim.boot.amplifier.path.read_text().splitlines()
    return [(entry["at"], entry["on"]) for entry in map(json.loads, lines)]


@pytest.mark.parametrize("forced_on", [True, False], ids=["on", "off"])
def test_forced_amplifier_power_holds_until_the_next_play(
        tmp_path: Path, forced_on: bool) -> None:
    """Forced power holds while idle (longer than idle_off_s); the next program powers the
    amplifier as usual (on for its warm-up before it starts, off idle_off_s after)."""
    sim = Scenario(tmp_path, amplifier_log=True)
    lead_s = 3 * SETTINGS.idle_off_s
    sim.do(ev.Publish(({"id": "p-1", "title": "t", "priority": "scheduled", "start": lead_s,
                        "source": {"type": "media", "items": ["m0"]}},), frozenset(), False))
    start = sim.world.clock.now() + lead_s
    if not forced_on:  # on for a while first, so that forcing it off is a change
        on = sim.send_command("amplifier", on=True)
        sim.until(lambda: "completed" in sim.statuses(on), 1, "the completed ack")
    cmd = sim.send_command("amplifier", on=forced_on)
    sim.until(lambda: "completed" in sim.statuses(cmd), 1, "the completed ack")
    assert _power(sim)[-1][1] is forced_on
    assert sim.boot.loop.snapshot()["amplifier"] == ("on" if forced_on else "off")
    sim.wait(SETTINGS.idle_off_s + 1.0)
    assert _power(sim)[-1][1] is forced_on, "forced power did not hold"
    [report] = sim.until(lambda: sim.plays("p-1"), lead_s + 30, "the program's report")
    assert (report["outcome"], epoch(report["started_at"])) == ("completed", start)
    program_end = epoch(report["ended_at"])
    sim.wait(SETTINGS.idle_off_s + 2.0)
    cycle = [(at, on) for at, on in _power(sim) if at > start - SETTINGS.warmup_s - 1.0]
    assert forced_on or (cycle[0] == (start - SETTINGS.warmup_s, True)), \
        f"forced off, the amplifier was not powered for the program: {cycle}"
    assert cycle[-1][1] is False, f"the amplifier stayed forced on after the next play: {cycle}"
    assert program_end + SETTINGS.idle_off_s <= cycle[-1][0] \
        <= program_end + SETTINGS.idle_off_s + 1.0
    assert sim.boot.loop.snapshot()["amplifier"] == "off"
    sim.end()
