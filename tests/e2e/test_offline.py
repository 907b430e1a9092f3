"""Offline operation end to end: with the source gone, the real agent keeps playing its
cached schedule (also across its own restart) and keeps its proof of play until the source
is back; then every play arrives exactly once and the outbox drains."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.conftest import (
    AgentFactory,
    Source,
    capture_until,
    metric,
    program,
    wait_ready,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.schemas import validate
from tests.support.wavfile import assert_starts_on_time

LEAD_S = 7.0


def assert_delivered_once(source: Source, agent: AgentProcess,
                          expected: set[tuple[str, str]]) -> None:
    """Each expected (program, media) play arrives as exactly one report, and the agent's
    report outbox empties."""
    def delivered() -> bool:
        plays = {(r["program_id"], r["media_id"]) for r in source.play_reports()}
        return expected <= plays
    wait_for(delivered, 20, 0.2, f"play reports of {sorted(expected)}")
    wait_for(lambda: metric(agent, "outbox_depth", channel="report") == 0, 20, 0.2,
             "the report outbox to drain")
    plays = source.play_reports()
    for report in plays:
        validate("report", report)
        assert report["outcome"] == "completed", report
    assert Counter((r["program_id"], r["media_id"]) for r in plays) == dict.fromkeys(expected, 1)


def test_plays_from_cache_while_the_source_is_down_and_reports_when_it_returns(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    source.add("m-2", media.tone(tmp_path / "b.wav", 500, 1.0))
    first = whole_second(LEAD_S)
    second = first + 3
    source.publish([program("p-1", ["m-1"], first), program("p-2", ["m-2"], second)])
    agent = agent_factory()
    wait_ready(agent, source.version)
    source.stop()

    capture = capture_until(agent, second + 1.5)
    assert_starts_on_time(capture, first, 1000)
    assert_starts_on_time(capture, second, 500)
    status = agent.status()
    assert status["source"]["reachable"] is False
    assert "source_unreachable" in {f["code"] for f in status["faults"]}
    assert (metric(agent, "outbox_depth", channel="report") or 0) >= 2

    source.start()
    assert_delivered_once(source, agent, {("p-1", "m-1"), ("p-2", "m-2")})
    wait_for(lambda: "source_unreachable" not in agent.fault_codes(), 15, 0.2,
             "source_unreachable cleared")


def test_restarted_agent_plays_its_stored_schedule_while_the_source_is_down(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    start = whole_second(LEAD_S + 2)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory()
    wait_ready(agent, source.version)
    agent.stop()
    source.stop()
    agent.start()
    assert start - time.time() > 2.0, "setup too slow"

    capture = capture_until(agent, start + 1.5)
    assert_starts_on_time(capture, start, 1000)
    assert agent.status()["source"]["schedule_version"] == source.version

    source.start()
    assert_delivered_once(source, agent, {("p-1", "m-1")})
