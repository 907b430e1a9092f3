"""Faults of source-api.md end to end: the real agent raises the fault code (in /status and
as a ``fault`` report to the source), and the last good schedule keeps playing. One case
per path through the agent; how each answer of the source is classified is proven against
the real simulator at unit level (tests/unit/test_sync.py, test_source_client.py), as is
a program naming an unknown media being left out while the rest is applied."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import public_key_b64, public_key_of
from tests.conftest import (
    AgentFactory,
    Source,
    capture_until,
    corrupt_cache_files,
    program,
    wait_ready,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.schemas import validate
from tests.support.wavfile import assert_starts_on_time

FAULTS_SHOW_S = 8.0  # a restarted agent polls at once; backoff is capped at 2 s


def assert_fault_shown(source: Source, agent: AgentProcess, code: str,
                       timeout: float = FAULTS_SHOW_S) -> None:
    """``code`` is raised in /status and reported to the source as a ``fault`` report."""
    wait_for(lambda: code in agent.fault_codes(), timeout, 0.1, f"fault {code} in /status")
    reports = wait_for(lambda: [r for r in source.reports()
                                if r["type"] == "fault" and r["code"] == code],
                       timeout + 15, 0.2, f"a fault report {code}")
    validate("report", reports[0])


def assert_plays(agent: AgentProcess, start: float, frequency: float,
                 tolerance_s: float = 0.005) -> None:
    capture = capture_until(agent, start + tolerance_s + 0.8)
    assert_starts_on_time(capture, start, frequency, tolerance_s)


def restart_with(agent: AgentProcess, change: Any) -> None:
    """Stop the agent, change the source, start the agent: its first poll meets the change."""
    agent.stop()
    change()
    agent.start()


def test_source_fault_is_raised_and_the_last_good_schedule_plays(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """One source failure through the real agent: raised in /status, reported to the source
    once it is back, cleared, and the last good schedule, loaded at the restart, plays on
    its sample meanwhile. How each failure (401, 403, 404, 500, 503, a body that is not
    JSON, a read timeout, an older version) is classified, raised, reported and cleared is
    proven against the real simulator in tests/unit/test_sync.py and test_source_client.py."""
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    start = whole_second(8 + FAULTS_SHOW_S)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory()
    wait_ready(agent, source.version)
    restart_with(agent, lambda: source.set_faults(schedule_status=503))

    wait_for(lambda: "source_unreachable" in agent.fault_codes(), FAULTS_SHOW_S, 0.1,
             "fault source_unreachable")
    assert start - time.time() > 2.0, "setup too slow"
    status = agent.status()
    assert status["source"]["schedule_version"] == source.version
    assert status["source"]["reachable"] is False
    assert_plays(agent, start, 1000)

    source.set_faults(schedule_status=None)
    assert_fault_shown(source, agent, "source_unreachable")
    wait_for(lambda: "source_unreachable" not in agent.fault_codes(), 15, 0.2,
             "source_unreachable cleared")


def _key_file(path: Path) -> tuple[Path, str]:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, public_key_b64(public_key_of(key))


def test_schedule_signed_by_another_key_is_never_applied(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """source.public_key through the real agent: a schedule signed by another key is
    refused and the last good one plays. An unsigned or badly signed schedule is refused
    the same way against the real simulator in tests/unit/test_sync.py and
    test_source_client.py."""
    key_file, public_key = _key_file(tmp_path / "province.pem")
    other_key_file, _ = _key_file(tmp_path / "intruder.pem")
    source.stop()
    source.start(signing_key_file=key_file)
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    source.add("m-2", media.tone(tmp_path / "b.wav", 500, 1.0))
    start = whole_second(8 + FAULTS_SHOW_S)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory(source={"public_key": public_key})
    wait_ready(agent, source.version)

    def tampered() -> None:
        source.stop()
        source.start(signing_key_file=other_key_file)
        source.publish([program("p-1", ["m-2"], start)])
    restart_with(agent, tampered)

    assert_fault_shown(source, agent, "schedule_signature")
    assert agent.status()["source"]["schedule_version"] == source.version - 1
    assert_plays(agent, start, 1000)


def test_corrupt_media_is_discarded_then_fetched_again(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    start = whole_second(8 + FAULTS_SHOW_S)
    source.publish([program("p-1", ["m-1"], start)])
    source.set_faults(wrong_hash=True)
    agent = agent_factory()

    assert_fault_shown(source, agent, "media_corrupt")
    assert agent.status()["cache"]["missing"] == 1
    assert corrupt_cache_files(Path(agent.config["cache"]["dir"])) == []
    source.set_faults(wrong_hash=False)
    wait_ready(agent, source.version, timeout=FAULTS_SHOW_S)
    wait_for(lambda: "media_corrupt" not in agent.fault_codes(), 5, 0.1, "media_corrupt cleared")
    assert corrupt_cache_files(Path(agent.config["cache"]["dir"])) == []
    assert_plays(agent, start, 1000)
