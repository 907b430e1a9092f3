"""What a scheduled program airs, on the simulated core: an item not cached at its start,
``repeat``, a late start joining where the program would be, and a ``stop`` of the
emergency over it. On-sample timing, gapless audio and clicks stay in tests/e2e."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.control.loop import BUSY_WAIT_S, IDLE_WAIT_S, PLAYING_WAIT_S
from tests.simulation import events as ev
from tests.simulation.scenario import Scenario, epoch
from tests.simulation.world import SETTINGS

LEAD_S = 5
M0_S, M1_S = 4.0, 7.0  # the lengths of the cached media m0 and m1 (simulation._length)


def media_program(items: list[str], start: int, **extra: Any) -> ev.Publish:
    return ev.Publish(({"id": "p-1", "title": "t", "priority": "scheduled", "start": start,
                        "source": {"type": "media", "items": items}, **extra},),
                      frozenset(ev.MEDIA), False)


def test_media_not_cached_at_the_start_is_reported_and_the_rest_plays(
        tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(media_program(["m2", "m0"], LEAD_S))  # m2: listed, never cached
    start = sim.world.clock.now() + LEAD_S
    missing, played = sim.until_plays(2, LEAD_S + 10, "p-1")
    assert [(r["media_id"], r["outcome"], r["played_s"]) for r in (missing, played)] == \
        [("m2", "failed", 0.0), ("m0", "completed", M0_S)]
    # The rest starts when the missing item would have: at once, once a decoder is up.
    assert start <= epoch(played["started_at"]) <= start + 1.0
    assert sim.aired() == [("p-1", 1)]
    # the fault in Status, as an MQTT event and as a fault report to the source
    assert [e["code"] for e in sim.mqtt_events("fault_raised")] == ["media_missing"]
    assert [r.payload["code"] for r in sim.sent if r.kind == "fault"][:1] == ["media_missing"]
    [event] = [r.payload for r in sim.sent if r.kind == "event:media_missing"]
    assert (event["program_id"], event["media_id"]) == ("p-1", "m2")
    sim.end()


def test_repeat_plays_the_items_again(tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(media_program(["m0"], LEAD_S, repeat=2))
    start = sim.world.clock.now() + LEAD_S
    first, second = sim.until_plays(2, LEAD_S + 2 * M0_S + 2, "p-1")
    assert [(r["media_id"], r["outcome"], r["played_s"]) for r in (first, second)] == \
        [("m0", "completed", M0_S)] * 2
    assert (epoch(first["started_at"]), epoch(second["started_at"])) == (start, start + M0_S)
    assert sim.aired() == [("p-1", 0), ("p-1", 1)]
    sim.wait(10.0)
    assert len(sim.plays("p-1")) == 2
    sim.end()


def test_late_start_joins_at_the_position_it_would_have_reached(tmp_path: Path) -> None:
    """The agent was off when the program began, for longer than late_start_grace_s: it
    joins where the program would be (inside its fifth item), not from the beginning."""
    sim = Scenario(tmp_path)
    sim.do(media_program(["m1"] * 6, 60))
    start = sim.world.clock.now() + 60
    late_s = 31.5
    assert late_s > SETTINGS.late_start_grace_s
    sim.do(ev.Restart(60 + late_s, power_cut=False))
    booted = sim.world.clock.now()
    joined, rest = sim.until_plays(2, 2 * M1_S, "p-1")
    # the fifth item (index 4) would end 5 * M1_S into the program
    assert (joined["media_id"], joined["outcome"]) == ("m1", "completed")
    assert epoch(joined["ended_at"]) == start + 5 * M1_S
    assert 0.0 <= epoch(joined["started_at"]) - booted <= 1.0
    assert joined["played_s"] == epoch(joined["ended_at"]) - epoch(joined["started_at"])
    assert (rest["played_s"], epoch(rest["ended_at"])) == (M1_S, start + 6 * M1_S)
    assert sim.aired() == [("p-1", 4), ("p-1", 5)]
    sim.end()


def test_stop_ends_the_emergency_and_the_program_resumes(tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(media_program(["m1"], LEAD_S))
    sim.until(lambda: sim.on_air("p-1"), LEAD_S + 2, "the program on air")
    sim.wait(1.5)
    emergency = sim.send_command("emergency", media_id="m0", repeat=5)
    sim.until(lambda: (sim.playing() or {}).get("priority") == "emergency", 3,
              "the emergency on air")
    sim.wait(1.0)
    stop = sim.send_command("stop", priority="emergency")
    stopped_at = sim.world.clock.now()
    sim.until(lambda: "completed" in sim.statuses(emergency), 1, "the emergency's completed ack")
    assert sim.statuses(stop) == ["accepted", "completed"]
    assert sim.statuses(emergency) == ["accepted", "completed"]
    preempted, alert, restarted = sim.until_plays(3, M1_S + 3)
    assert (preempted["program_id"], preempted["outcome"]) == ("p-1", "preempted")
    assert (alert["program_id"], alert["priority"], alert["outcome"]) == (
        f"cmd:{emergency}", "emergency", "stopped")
    assert epoch(alert["ended_at"]) - stopped_at < 0.5
    assert (restarted["program_id"], restarted["outcome"]) == ("p-1", "completed")
    assert epoch(restarted["started_at"]) - stopped_at < 1.0
    assert restarted["played_s"] == M1_S  # the item again, from its beginning
    sim.wait(10.0)
    assert len(sim.plays()) == 3, "the emergency went on after stop"
    sim.end()


def test_the_loop_turns_often_only_while_something_starts_or_ends_soon(
        tmp_path: Path) -> None:
    """Playing steadily, the deciding thread waits PLAYING_WAIT_S between turns (it is
    woken by what cannot wait); before a start it turns every BUSY_WAIT_S, and it waits
    for the end of a program's window exactly."""
    sim = Scenario(tmp_path)
    loop = sim.boot.loop
    sim.do(media_program(["m1"] * 3, LEAD_S, duration_s=10.0))
    start = sim.world.clock.now() + LEAD_S
    assert loop.wait_s() == IDLE_WAIT_S  # nothing within the lookahead yet
    sim.wait(LEAD_S - 1.0)
    assert loop.wait_s() == BUSY_WAIT_S  # the start is near: pre-roll and warm-up
    sim.until(sim.playing, 2.0, "the program on air")
    sim.wait(start + 3.0 - sim.world.clock.now())
    assert loop.wait_s() == PLAYING_WAIT_S
    sim.wait(start + 9.9 - sim.world.clock.now())
    assert loop.wait_s() == pytest.approx(0.1)  # the window closes at start + 10 s
    sim.wait(0.5)
    assert sim.playing() is None
    sim.end()
