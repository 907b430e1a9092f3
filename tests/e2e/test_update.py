"""Signed updates end to end (issue 13, "A real update, tested"; docs/updates.md): the real
agent runs under a supervisor standing in for systemd (restart on exit), starting as
release 1.0 installed beside; a signed ``update`` command over a real Mosquitto fetches a
real bundle over HTTP. Releases are bundles of this checkout with a pretended version;
the broken ones are patched copies of it."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.core.signing import sign
from agent.update.state import load_state, update_root
from tests.conftest import AgentFactory, Source, capture_until, program, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.bundles import BundleServer, build_bundle, bundle_args, install_release
from tests.support.central_checks import (
    DEVICE,
    KEY,
    CheckedCentral,
    mqtt_config,
)
from tests.support.supervisor import Supervisor
from tests.support.wavfile import assert_starts_on_time

pytestmark = pytest.mark.xdist_group("update")

COMMIT_AFTER_S = 5.0
UPDATE_CONFIG = {"update": {"commit_after_s": COMMIT_AFTER_S, "window": "00:00-24:00"}}
CRASH_PATCH = {"agent/service/daemon.py": (
    '\nlog = logging.getLogger("agent")\n',
    '\nlog = logging.getLogger("agent")\nraise RuntimeError("this build crashes at start")\n')}
DEGRADED_PATCH = {"agent/service/daemon.py": (
    '        log.info("broadcast-agent %s started as %s", __version__, self.cfg.device_id)\n',
    '        self.faults.raise_("audio_output", "a deliberately degraded build")\n'
    '        log.info("broadcast-agent %s started as %s", __version__, self.cfg.device_id)\n')}
ROLLBACK_WITHIN_S = 120.0
# Each update takes four or five kills (in its download or staged, then the trial's three
# starts until the launcher rolls back), so ten make about two rounds, one each way.
KILLS = 10
# Each kill comes this long after the agent's run answers. Timed from the previous kill, on
# a CI machine whose agent took 4.7 s to start, all ten kills (0.3-3 s apart) landed
# before the run could move its update on. From the answer, the steps last as long as the
# throttled download and commit_after_s make them, whatever the machine's speed.
KILL_AFTER_S = (0.3, 4.0)
SLOW_RATE = 400_000  # bytes/s: 0.92 s at least for the 368,640-byte bundle
IN_THE_DOWNLOAD_S = (0.1, 0.8)  # the first kill of each update, within that download
IN_PROGRESS = ("downloading", "staged", "trial")


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundles, built once per session (per xdist worker)."""
    folder = tmp_path_factory.mktemp("releases")
    build_bundle("1.0", folder)
    build_bundle("1.1", folder)
    build_bundle("1.1", folder, name="1.1-crashes", patches=CRASH_PATCH)
    build_bundle("1.1", folder, name="1.1-degraded", patches=DEGRADED_PATCH)
    return folder


Supervised = Callable[..., Supervisor]


@pytest.fixture
def supervised(agent_factory: AgentFactory, source: Source,
               broker: Any, releases: Path) -> Iterator[Supervised]:
    """``supervised(**overrides)``: a real agent on release 1.0 under a Supervisor, on the
    broker, with update.commit_after_s 5 and an all-day window; stopped at teardown."""
    running: list[Supervisor] = []

    def make(**overrides: Any) -> Supervisor:
        source.publish([])
        agent = agent_factory(start=False, **mqtt_config(broker), **UPDATE_CONFIG,
                              **overrides)
        install_release(agent.state_dir, releases / "1.0.bundle", "1.0")
        supervisor = Supervisor(agent).start()
        running.append(supervisor)
        wait_for(lambda: _version(agent) == "1.0", 30, 0.2, f"release 1.0 up "
                 f"({agent.log_tail(10)})")
        return supervisor

    yield make
    for supervisor in running:
        supervisor.stop()


def _version(agent: AgentProcess) -> str | None:
    try:
        return str(agent.status()["agent_version"])
    except Exception:  # down between two runs
        return None


def _status(agent: AgentProcess) -> dict[str, Any]:
    """Status, or {} while the agent is down between two runs."""
    try:
        return agent.status()
    except Exception:
        return {}


def _online(agent: AgentProcess) -> dict[str, Any]:
    """Status once the agent is connected to the broker (its commands would be lost
    before: its session is not persistent), else {}."""
    status = _status(agent)
    return status if status and status["mqtt"]["connected"] else {}


def _wait_for_a_run_after(supervisor: Supervisor, killed: int | None) -> None:
    """Until a run other than the killed one answers its health endpoint."""
    def answering() -> bool:
        process = supervisor.agent.process
        return (process is not None and process.pid != killed and process.poll() is None
                and bool(_status(supervisor.agent)))
    wait_for(answering, 60, 0.02, f"a run after {killed} answering")


def _settled(agent: AgentProcess) -> dict[str, Any]:
    status = _status(agent)
    done = status and status["update"]["state"] not in IN_PROGRESS
    return status if done else {}


def update_command(bundle: Path, version: str, url: str) -> dict[str, Any]:
    """A signed ``update`` for this device (``to`` names it, as the contract requires)."""
    now = datetime.now().astimezone()
    cmd: dict[str, Any] = {
        "id": str(uuid.uuid4()), "type": "update", "to": DEVICE,
        "args": bundle_args(bundle, version, url),
        "issued_at": now.isoformat(timespec="milliseconds"),
        "expires_at": (now + timedelta(minutes=5)).isoformat(timespec="milliseconds")}
    cmd["signature"] = sign(cmd, KEY)
    return cmd


def send_update(central: CheckedCentral, releases: Path, name: str,
                rate: float | None = None) -> tuple[dict[str, Any], BundleServer]:
    server = BundleServer(releases, rate).__enter__()
    cmd = update_command(releases / f"{name}.bundle", "1.1", server.url(f"{name}.bundle"))
    central.wait_online()
    central.send_accepted(cmd)
    return cmd, server


def test_update_to_1_1_is_committed_after_its_trial(
        supervised: Supervised, central: CheckedCentral, releases: Path) -> None:
    supervisor = supervised()
    agent = supervisor.agent
    cmd, server = send_update(central, releases, "1.1")
    try:
        began = time.monotonic()
        central.wait_ack(cmd["id"], "completed", timeout=90)
        took = time.monotonic() - began
    finally:
        server.__exit__()
    assert took >= COMMIT_AFTER_S, f"committed {took:.1f} s after the command: no trial"
    [started] = central.events("update_started")
    assert (started["version"], started["previous"], started["command_id"]) == \
        ("1.1", "1.0", cmd["id"])
    [committed] = central.events("update_committed")
    assert (committed["version"], committed["previous"]) == ("1.1", "1.0")
    assert central.acks(cmd["id"]) == ["accepted", "completed"]
    assert central.events("update_rolled_back") == []
    status = agent.status()
    assert status["agent_version"] == "1.1"
    assert status["update"] == {"state": "committed", "version": "1.1", "previous": "1.0"}
    assert "update_failed" not in agent.fault_codes()
    versions = update_root(agent.state_dir) / "versions"
    assert sorted(p.name for p in versions.iterdir()) == ["1.0", "1.1"]  # beside, both kept
    assert supervisor.exits == [0]  # 1.0 handed over cleanly, once


def test_a_1_1_that_crashes_at_start_is_rolled_back_to_1_0(
        supervised: Supervised, central: CheckedCentral, releases: Path) -> None:
    supervisor = supervised()
    agent = supervisor.agent
    cmd, server = send_update(central, releases, "1.1-crashes")
    server.__exit__()  # nothing more to fetch once it is installed
    switched = wait_for(lambda: load_state(update_root(agent.state_dir)).state == "trial",
                        60, 0.05, "the switch to 1.1")
    began = time.monotonic()
    ack = central.wait_ack(cmd["id"], "failed", timeout=ROLLBACK_WITHIN_S)
    assert switched
    assert time.monotonic() - began < ROLLBACK_WITHIN_S
    assert ack["reason"].startswith("crash_loop: 1.1 started 3 times"), ack
    # The ack and the event are separate records of the outbox: the ack may arrive first.
    central.wait("events", lambda e: e["type"] == "update_rolled_back", timeout=10)
    [rolled] = central.events("update_rolled_back")
    assert (rolled["version"], rolled["previous"]) == ("1.1", "1.0")
    assert rolled["reason"] == ack["reason"]
    status = wait_for(lambda: _status(agent), 30, 0.2, "1.0 back up")
    assert status["agent_version"] == "1.0"
    assert status["update"]["state"] == "rolled_back"
    assert "update_failed" in {f["code"] for f in status["faults"]}
    assert central.events("update_committed") == []
    assert supervisor.exits.count(1) >= 3, supervisor.exits  # the crashing starts


def test_a_1_1_that_stays_degraded_is_rolled_back_after_commit_after_s(
        supervised: Supervised, central: CheckedCentral, releases: Path) -> None:
    agent = supervised().agent
    cmd, server = send_update(central, releases, "1.1-degraded")
    server.__exit__()
    wait_for(lambda: _version(agent) == "1.1", 60, 0.1, "the degraded 1.1 running")
    on_trial = time.monotonic()
    ack = central.wait_ack(cmd["id"], "failed", timeout=90)
    assert time.monotonic() - on_trial >= COMMIT_AFTER_S
    assert ack["reason"].startswith("unhealthy: not healthy for 5 s on trial"), ack
    assert "fault audio_output" in ack["reason"]
    status = wait_for(lambda: _status(agent), 30, 0.2, "1.0 back up")
    assert status["agent_version"] == "1.0"
    assert status["update"] == {"state": "rolled_back", "version": "1.1", "previous": "1.0"}
    assert "audio_output" not in {f["code"] for f in status["faults"]}
    assert "update_failed" in {f["code"] for f in status["faults"]}
    assert [e["type"] for e in central.events("update_started", "update_committed",
                                              "update_rolled_back")] == \
        ["update_started", "update_rolled_back"]


@pytest.mark.slow
def test_ten_kills_during_updates_leave_1_0_or_1_1_playing_on_its_sample(
        supervised: Supervised, central: CheckedCentral, releases: Path, source: Source,
        tmp_path: Path) -> None:
    """Each kill lands at a random moment of an update in progress: when one is over
    (committed or rolled back) before the kills are, the next goes the other way (1.1 back
    to 1.0, or 1.0 to 1.1 again). Kills on trial roll 1.1 back before it can commit, so
    halfway 1.1 is let commit: the second half's updates go from 1.1 back to 1.0."""
    rng = random.Random(20261126)
    agent = (supervisor := supervised()).agent
    root = update_root(agent.state_dir)
    sent: list[dict[str, Any]] = []
    states: list[str] = []
    killed: int | None = None
    with BundleServer(releases, SLOW_RATE) as server:
        def update_to_the_other_release() -> None:
            status = wait_for(lambda: _online(agent), 30, 0.05, "the agent online")
            release = "1.0" if status["agent_version"] == "1.1" else "1.1"
            sent.append(update_command(releases / f"{release}.bundle", release,
                                       server.url(f"{release}.bundle")))
            central.send_accepted(sent[-1])

        for kill in range(KILLS):
            if kill == KILLS // 2:
                if wait_for(lambda: _settled(agent), 180, 0.5,
                            "an update settled")["agent_version"] != "1.1":
                    update_to_the_other_release()
                wait_for(lambda: _settled(agent).get("agent_version") == "1.1", 180, 0.5,
                         f"1.1 committed ({agent.log_tail(20)})")
            just_sent = load_state(root).state not in IN_PROGRESS
            if just_sent:
                update_to_the_other_release()
            _wait_for_a_run_after(supervisor, killed)
            time.sleep(rng.uniform(*(IN_THE_DOWNLOAD_S if just_sent else KILL_AFTER_S)))
            states.append(load_state(root).state)
            killed = supervisor.power_cut()
        print(f"{len(sent)} updates; the update state at each of the {KILLS} kills: {states}")
        settled = wait_for(lambda: _settled(agent), 180, 0.5,
                           f"the last update settled ({agent.log_tail(20)})")
    assert settled["agent_version"] in ("1.0", "1.1"), settled
    assert len(set(states) & set(IN_PROGRESS)) >= 2, f"kills in too few steps: {states}"
    assert {command["args"]["version"] for command in sent} == {"1.0", "1.1"}, \
        "the updates did not go both ways"
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["1.0", "1.1"]

    wav = media.tone(tmp_path / "tone.wav", 1000, 2.0, level_dbfs=-6)
    source.add("m-1", wav)
    start = whole_second(12)
    source.publish([program("p-1", ["m-1"], start)])
    capture = capture_until(agent, start + 2.5)
    assert_starts_on_time(capture, start, 1000)
    print(f"after the kills: {settled['agent_version']}, update {settled['update']}")
