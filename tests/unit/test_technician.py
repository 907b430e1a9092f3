"""The technician's commands against a real agent, its state on disk, and the real chain."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import AgentFactory, Source, program, wait_ready, whole_second
from tests.support.agentproc import REPO, AgentProcess, base_config, free_port, wait_for
from tests.support.media import tone
from tests.support.wavfile import read_capture, rms_dbfs, tone_frequency


def cli(config: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args, "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})})


def _publish_tone_program(tmp_path: Path, source: Source, lead_s: float = 3600) -> float:
    source.add("m-tone", tone(tmp_path / "tone.wav", 1000, 2.0))
    start = whole_second(lead_s)
    source.publish([program("p-later", ["m-tone"], start)])
    return start


def test_status_reads_the_running_daemon(tmp_path: Path, source: Source,
                                         agent_factory: AgentFactory) -> None:
    _publish_tone_program(tmp_path, source)
    agent = agent_factory()
    wait_ready(agent, source.version)
    wait_for(lambda: agent.status()["next"], 5, what="the next programs in Status")
    human = cli(agent.config_path, "status")
    assert human.returncode == 0, human.stderr
    assert "xa-test-01" in human.stdout and "p-later" in human.stdout
    assert "Faults: none" in human.stdout
    machine = json.loads(cli(agent.config_path, "status", "--json").stdout)
    assert machine["source"]["schedule_version"] == source.version
    vietnamese = cli(agent.config_path, "status", env={"LANGUAGE": "vi"})
    assert vietnamese.returncode == 0 and "p-later" in vietnamese.stdout


def test_status_without_a_daemon_fails_with_a_hint(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, base_config(tmp_path, "http://127.0.0.1:9/api/v1"))
    result = cli(agent.config_path, "status")
    assert result.returncode == 1
    assert "systemctl status broadcast-agent" in result.stderr


def test_status_json_is_json_even_without_a_daemon_or_a_config(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, base_config(tmp_path, "http://127.0.0.1:9/api/v1"))
    down = cli(agent.config_path, "status", "--json")
    assert down.returncode == 1
    report = json.loads(down.stdout)
    assert report["online"] is False and report["device_id"] == "xa-test-01"
    assert report["error"].startswith("the agent is not answering on 127.0.0.1:")
    broken = tmp_path / "broken.yaml"
    broken.write_text("device_id: [\n")
    unreadable = cli(broken, "status", "--json")
    assert unreadable.returncode == 2
    assert json.loads(unreadable.stdout)["online"] is False
    assert str(broken) in json.loads(unreadable.stdout)["error"]


def test_schedule_and_cache_work_from_the_state_on_disk(tmp_path: Path, source: Source,
                                                       agent_factory: AgentFactory) -> None:
    start = _publish_tone_program(tmp_path, source)
    agent = agent_factory()
    wait_ready(agent, source.version)
    agent.stop()
    listing = json.loads(cli(agent.config_path, "schedule", "--json").stdout)
    assert listing["version"] == source.version
    assert listing["programs"][0]["program_id"] == "p-later"
    assert listing["programs"][0]["start"].startswith(time.strftime("%Y-%m-%d",
                                                                    time.gmtime(start))[:4])
    entries = json.loads(cli(agent.config_path, "cache", "list", "--json").stdout)["entries"]
    assert [e["sha256"] for e in entries] == [source.media["m-tone"]["sha256"]]
    assert cli(agent.config_path, "cache", "verify").returncode == 0
    # A file whose bytes no longer match its name is found, named and dropped.
    cached = next((agent.tmp / "cache").rglob(source.media["m-tone"]["sha256"]))
    cached.write_bytes(b"broken")
    verify = cli(agent.config_path, "cache", "verify", "--json")
    assert source.media["m-tone"]["sha256"] in verify.stdout + verify.stderr
    assert not cached.exists()
    assert json.loads(cli(agent.config_path, "cache", "list", "--json").stdout)["entries"] \
        == []
    # Nothing referenced is pruned; once the schedule drops it, prune removes it.
    assert json.loads(cli(agent.config_path, "cache", "prune", "--json").stdout)["evicted"] \
        == []


def test_test_tone_goes_through_the_whole_chain(tmp_path: Path) -> None:
    config = base_config(tmp_path, "http://127.0.0.1:9/api/v1",
                         health={"listen": f"127.0.0.1:{free_port()}"},
                         amplifier={"backend": "sim", "warmup_s": 0.3, "idle_off_s": 1},
                         audio={"default_volume": 100})
    agent = AgentProcess(tmp_path, config)
    agent.state_dir.mkdir(parents=True)
    result = cli(agent.config_path, "test-tone", "--seconds", "1.5", "--frequency", "440")
    assert result.returncode == 0, result.stderr
    capture = read_capture(agent.wav)
    first = capture.first_non_silent(threshold=300)
    assert first is not None
    segment = capture.samples[first + 2400:first + 2400 + 48000]
    assert abs(tone_frequency(segment, capture.rate) - 440) < 5
    assert -9.5 < rms_dbfs(segment) < -8.5  # a -6 dBFS peak sine (RMS -9 dBFS), volume 100
    transitions = [entry["on"] for entry in agent.amplifier_log()]
    assert transitions == [False, True, False]
    on_at = agent.amplifier_log()[1]["at"]
    assert capture.time_of(first) - on_at >= 0.3  # warm-up before the first sample


def test_test_tone_refuses_while_the_daemon_runs(tmp_path: Path, source: Source,
                                                 agent_factory: AgentFactory) -> None:
    _publish_tone_program(tmp_path, source)
    agent = agent_factory()
    result = cli(agent.config_path, "test-tone")
    assert result.returncode == 1 and "systemctl stop broadcast-agent" in result.stderr
