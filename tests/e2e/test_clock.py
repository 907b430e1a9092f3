"""A wrong clock, end to end (issue 11, "Commands and clock"), on the sim clock of
docs/config.md (``clock.backend: sim``). A controller without RTC after a power cut boots
6 h behind, trusted only by the source's ``Date`` header: until the clock is stepped right,
nothing scheduled airs and an emergency queued on the broker during the outage waits; once
trusted, that emergency is rejected as stale and never airs, a fresh command is accepted,
and the schedule plays on its sample again. And a step during a programme re-plans without
cutting it or airing it twice."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.core.clock import SIM_FILE
from agent.core.signing import sign
from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import wait_for
from tests.support.central_checks import (
    DEVICE,
    KEY,
    CheckedCentral,
    assert_no_gap,
    mqtt_config,
)
from tests.support.filesystems import write_json_atomically
from tests.support.mosquitto import Mosquitto
from tests.support.wavfile import assert_starts_on_time

BEHIND_S = 6 * 3600
TONE_HZ = 880
ALERT_HZ = 1500
TONE_DBFS = -6.0 - 3.01  # media.tone's default peak level, as RMS


def _set_offset(state_dir: Path, offset_s: float) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)  # before the agent's first start
    write_json_atomically(state_dir / SIM_FILE, {"offset_s": offset_s})


def _emergency_issued_at(issued: datetime) -> dict[str, Any]:
    cmd: dict[str, Any] = {
        "id": f"c-queued-{time.monotonic_ns()}", "type": "emergency",
        "args": {"media_id": "m-alert"}, "to": DEVICE,
        "issued_at": issued.isoformat(timespec="milliseconds"),
        "expires_at": (issued + timedelta(minutes=5)).isoformat(timespec="milliseconds")}
    cmd["signature"] = sign(cmd, KEY)
    return cmd


def _untrusted(faults: list[dict[str, Any]]) -> bool:
    return any(f["code"] == "clock_unsynced" for f in faults)


def test_an_agent_6h_behind_airs_nothing_until_its_clock_is_trusted(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    source.add("m-tone", media.tone(tmp_path / "tone.wav", TONE_HZ, 2.0))
    source.add("m-alert", media.tone(tmp_path / "alert.wav", ALERT_HZ, 1.0))
    on_the_wrong_clock = whole_second(12) - BEHIND_S  # "in 12 s" for the agent
    # After the step (at about 15 s) the clock is trusted by the next poll's Date header
    # (source.poll_interval_s 5 s, checked every second) and the fresh emergency airs
    # (1 s); measured alone: trusted at 20 s, emergency over at 22 s. p-right cues 3 s ahead.
    after_trust = whole_second(35)
    source.publish([program("p-wrong", ["m-tone"], on_the_wrong_clock),
                    program("p-right", ["m-tone"], after_trust)])
    agent = agent_factory(start=False, **mqtt_config(broker),
                          clock={"backend": "sim", "trusted_by": ["source"]})
    _set_offset(agent.state_dir, -BEHIND_S)
    agent.start()
    central.wait_online()
    wait_ready(agent, source.version)
    assert _untrusted(agent.status()["faults"])
    assert agent.status()["system"]["clock_synced"] is False

    # Queued during the outage: fresh by the agent's wrong clock, stale by the true one.
    queued = _emergency_issued_at(datetime.now().astimezone() - timedelta(seconds=BEHIND_S))
    central.send(queued)
    capture = capture_until(agent, on_the_wrong_clock + BEHIND_S + 3)
    assert capture.first_non_silent(64, after_epoch=time.time() - 10) is None, \
        "something aired on the untrusted clock"
    assert central.acks(queued["id"]) == [], "the queued command was judged untrusted"

    _set_offset(agent.state_dir, 0)  # NTP at last: the clock steps 6 h forward
    wait_for(lambda: not _untrusted(agent.status()["faults"]), 15, 0.2,
             "clock trusted through the source's Date header")
    ack = central.wait_ack(queued["id"], "rejected", timeout=5)
    assert ack["reason"].split(":")[0] in ("expired", "too_old"), ack

    fresh = central.command("emergency", {"media_id": "m-alert"})
    central.send_accepted(fresh)
    central.wait_ack(fresh["id"], "completed", timeout=15)

    capture = capture_until(agent, after_trust + 2.5)
    assert_starts_on_time(capture, after_trust, TONE_HZ)
    wait_for(lambda: len(source.play_reports()) >= 2, 20, 0.2, "two play reports")
    aired = sorted(r["program_id"] for r in source.play_reports())
    assert aired == [f"cmd:{fresh['id']}", "p-right"], aired
    assert central.acks(queued["id"]) == ["rejected"]


def test_a_clock_step_during_a_programme_neither_cuts_it_nor_airs_it_again(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    # Issue 11: "a clock step re-plans without airing anything twice". The programme plays
    # on through a step of an hour back; once it is over, the clock is stepped back to
    # just before its start, and its time comes round again: it must not air again.
    seconds = 6.0
    source.add("m-tone", media.tone(tmp_path / "tone.wav", TONE_HZ, seconds))
    start = whole_second(8)
    source.publish([program("p-1", ["m-tone"], start)])
    agent = agent_factory(start=False, clock={"backend": "sim", "trusted_by": ["always"]})
    _set_offset(agent.state_dir, 0)
    agent.start()
    wait_ready(agent, source.version)

    time.sleep(max(0.0, start + 2 - time.time()))
    _set_offset(agent.state_dir, -3600)  # an hour back, mid-programme
    time.sleep(max(0.0, start + seconds + 1 - time.time()))
    again_at = time.time() + 2  # the agent's clock reads `start` again then
    _set_offset(agent.state_dir, start - (again_at - 2) - 2)
    capture = capture_until(agent, again_at + seconds + 2)

    assert_starts_on_time(capture, start, TONE_HZ)
    assert_no_gap(capture, start + 0.05, seconds - 0.1, TONE_DBFS)
    assert capture.first_non_silent(after_epoch=start + seconds + 0.2) is None, \
        "the programme aired again when the stepped clock reached its start again"
    reports = wait_for(source.play_reports, 10, 0.2, "the play report")
    assert [(r["program_id"], r["outcome"]) for r in reports] == [("p-1", "completed")]
    assert abs(reports[0]["played_s"] - seconds) <= 0.1
