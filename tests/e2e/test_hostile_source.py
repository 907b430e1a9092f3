"""A hostile source, end to end (issue 11, "A hostile source"), while a programme plays:
the schedule served as a 2 GB gzip bomb, then trickled a byte every few seconds, then
naming media on another origin and a file: URL. Each time the agent keeps its last good
schedule, keeps playing without a gap, raises the documented fault and stays under its
RSS bound; no token reaches the other origin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import assert_no_gap

PROGRAM_S = 50.0
TONE_DBFS = -6.0 - 3.01  # media.tone's default peak level, as RMS
RSS_BOUND_BYTES = 250 * 1024 * 1024  # the agent plays in about 80 MB
REQUEST_DEADLINE_S = 3.0


@pytest.fixture
def cdn(tmp_path: Path) -> Iterator[Source]:
    """Another origin serving media, demanding no token."""
    other = Source(tmp_path / "cdn", token=None)
    other.start()
    yield other
    other.stop()


def _faults(agent: AgentProcess) -> dict[str, str]:
    return {f["code"]: f["message"] for f in agent.status()["faults"]}


def test_a_hostile_source_cannot_stop_the_programme_or_take_the_token(
        tmp_path: Path, source: Source, cdn: Source, agent_factory: AgentFactory) -> None:
    source.add("m-long", media.tone(tmp_path / "long.wav", 660, PROGRAM_S))
    start = whole_second(8)
    on_air = program("p-1", ["m-long"], start)
    source.publish([on_air])
    agent = agent_factory(source={"poll_interval_s": 5,
                                  "request_deadline_s": REQUEST_DEADLINE_S})
    good = source.version
    wait_ready(agent, good)
    wait_for(lambda: agent.status()["playing"], start + 5 - time.time(), 0.1, "the programme")

    source.set_faults(gzip_bomb_bytes=2 * 1024 ** 3)
    source.publish([on_air, program("p-bomb", ["m-long"], start + 3600)])
    wait_for(lambda: "schedule_too_large" in _faults(agent), 10, 0.2, "schedule_too_large")
    assert agent.status()["source"]["schedule_version"] == good

    source.set_faults(gzip_bomb_bytes=0, trickle_s=2.0)
    wait_for(lambda: "deadline" in _faults(agent).get("source_unreachable", ""),
             4 * REQUEST_DEADLINE_S + 5, 0.2, "source_unreachable: the request deadline")
    assert agent.status()["source"]["reachable"] is False
    assert agent.status()["source"]["schedule_version"] == good

    cdn_entry = cdn.add("m-cdn", media.tone(tmp_path / "cdn.wav", 440, 1.0))
    cdn_entry["url"] = f"{cdn.origin}/api/v1/media/m-cdn"
    file_entry = {**source.media["m-long"], "id": "m-file", "url": "file:///etc/passwd"}
    source.set_faults(trickle_s=0.0)
    source.publish([on_air, program("p-cdn", ["m-cdn"], start + 3600),
                    program("p-file", ["m-file"], start + 7200)],
                   media=[source.media["m-long"], cdn_entry, file_entry], check=False)
    wait_ready(agent, source.version, timeout=20)
    faults = _faults(agent)
    assert "m-file" in faults["schedule_invalid_program"]
    assert "schedule_too_large" not in faults and "source_unreachable" not in faults
    assert cdn.stats()["requests"]["media"] >= 1
    assert "with_authorization" not in cdn.stats()["requests"], "the token left its origin"

    heard_until = time.time()  # the programme plays on; the hostile answers are over
    assert heard_until < start + PROGRAM_S - 1, "the hostile answers outlasted the programme"
    capture = capture_until(agent, heard_until)
    assert_no_gap(capture, start + 0.05, heard_until - start - 0.05, TONE_DBFS)
    assert agent.memory_bytes("VmHWM") < RSS_BOUND_BYTES
