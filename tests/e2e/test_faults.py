"""Every fault of source-api.md end to end: the real agent raises its fault code (in
/status and as a ``fault`` report to the source), and the last good schedule keeps playing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import public_key_b64
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
from tests.support.wavfile import tone_frequency

SILENCE = 64
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
    index = capture.first_non_silent(SILENCE, after_epoch=start - 0.5)
    assert index is not None, f"nothing played at {start}"
    sounded = capture.time_of(index)
    assert abs(sounded - start) <= tolerance_s
    found = tone_frequency(capture.segment(sounded + 0.1, 0.6), capture.rate)
    assert abs(found - frequency) < frequency * 0.01, f"{found} Hz, expected {frequency} Hz"


def restart_with(agent: AgentProcess, change: Any) -> None:
    """Stop the agent, change the source, start the agent: its first poll meets the change."""
    agent.stop()
    change()
    agent.start()


@pytest.mark.parametrize(("switches", "code", "shows_within_s"), [
    ({"schedule_status": 401}, "source_auth", FAULTS_SHOW_S),
    ({"schedule_status": 403}, "source_auth", FAULTS_SHOW_S),
    ({"schedule_status": 404}, "source_unknown_device", FAULTS_SHOW_S),
    ({"schedule_status": 500}, "source_unreachable", FAULTS_SHOW_S),
    ({"schedule_status": 503}, "source_unreachable", FAULTS_SHOW_S),
    ({"garbage_json": True}, "source_bad_response", FAULTS_SHOW_S),
    # With source.read_timeout_s 2 (below), a source slower than that counts as down.
    ({"slow_s": 10}, "source_unreachable", FAULTS_SHOW_S),
], ids=["401", "403", "404", "500", "503", "garbage-json", "read-timeout"])
def test_source_fault_is_raised_and_the_last_good_schedule_plays(
        tmp_path: Path, source: Source, agent_factory: AgentFactory,
        switches: dict[str, Any], code: str, shows_within_s: float) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    start = whole_second(8 + shows_within_s)
    source.publish([program("p-1", ["m-1"], start)])
    agent = agent_factory(source={"read_timeout_s": 2})
    wait_ready(agent, source.version)
    restart_with(agent, lambda: source.set_faults(**switches))

    wait_for(lambda: code in agent.fault_codes(), shows_within_s, 0.1, f"fault {code}")
    assert start - time.time() > 2.0, "setup too slow"
    assert agent.status()["source"]["schedule_version"] == source.version
    assert_plays(agent, start, 1000)

    source.set_faults(**{"schedule_status": None, "garbage_json": False, "slow_s": 0})
    assert_fault_shown(source, agent, code, shows_within_s)
    wait_for(lambda: code not in agent.fault_codes(), 15, 0.2, f"{code} cleared")


def test_older_schedule_is_ignored_as_a_rollback(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    source.add("m-2", media.tone(tmp_path / "b.wav", 500, 1.0))
    start = whole_second(8 + FAULTS_SHOW_S)
    source.publish([program("p-1", ["m-1"], start)], version=5)
    agent = agent_factory()
    wait_ready(agent, 5)
    restart_with(agent, lambda: source.publish([program("p-1", ["m-2"], start)], version=4))

    assert_fault_shown(source, agent, "schedule_rollback")
    assert agent.status()["source"]["schedule_version"] == 5
    assert_plays(agent, start, 1000)


def _key_file(path: Path) -> tuple[Path, str]:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, public_key_b64(key.public_key())


@pytest.mark.parametrize("tamper", ["unsigned", "other-key"])
def test_schedule_without_a_valid_signature_is_never_applied(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, tamper: str) -> None:
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
        if tamper == "unsigned":
            source.set_faults(sign=False)
        else:
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


def test_program_with_an_unknown_media_is_skipped_and_the_rest_applied(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "a.wav", 1000, 1.0))
    start = whole_second(8)
    source.publish([program("p-bad", ["m-unknown"], start - 4),
                    program("p-1", ["m-1"], start)])
    agent = agent_factory()
    wait_ready(agent, source.version)

    assert_fault_shown(source, agent, "schedule_invalid_program")
    assert "p-bad" in {f["message"] for f in agent.status()["faults"]
                       if f["code"] == "schedule_invalid_program"}.pop()
    assert_plays(agent, start, 1000)
