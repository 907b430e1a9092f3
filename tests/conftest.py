"""Shared fixtures of the end-to-end tests: a simulated source and real agent processes."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agentproc import (
    REPO,
    AgentProcess,
    base_config,
    free_port,
    local_time,
    wait_for,
)
from tests.support.hil import HIL
from tests.support.source_sim import add_media, write_schedule
from tests.support.wavfile import Capture, read_capture

DEVICE = "xa-test-01"
TOKEN = "test-token"
TZ = "Asia/Ho_Chi_Minh"


class Source:
    """One test's source system: a content directory served by the real simulator
    (``python -m tests.support.simulator``) in a process of its own on a port of its own.
    :meth:`stop` kills the process, so an outage also cuts the agent's open connections;
    :meth:`start` brings a fresh one up on the same port and content."""

    def __init__(self, root: Path, token: str | None = TOKEN) -> None:
        self.root = root
        self.token = token
        self.content = root / "content"
        self.content.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.version = 0
        self.media: dict[str, dict[str, Any]] = {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self, signing_key_file: Path | None = None) -> None:
        argv = [sys.executable, "-m", "tests.support.simulator", "--dir", str(self.content),
                "--port", str(self.port), "--device-id", DEVICE]
        if self.token is not None:
            argv += ["--token", self.token]
        if signing_key_file is not None:
            argv += ["--signing-key-file", str(signing_key_file)]
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for(self._up, 10, 0.05, f"simulator on port {self.port}")

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"simulator exited with {self.process.returncode}")
        try:
            return requests.get(self._sim("stats"), timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    @property
    def running(self) -> Source:
        """This source, checked to be up: its simulator's reports, stats and faults."""
        assert self.process is not None, "the simulator is stopped"
        return self

    def _sim(self, what: str) -> str:
        return f"http://127.0.0.1:{self.port}/_sim/{what}"

    def set_faults(self, **switches: Any) -> None:
        """Switch simulator faults (tests.support.simulator.SimFaults fields)."""
        requests.post(self._sim("faults"), json=switches, timeout=5).raise_for_status()

    def reports(self) -> list[dict[str, Any]]:
        """What the simulator accepted (one per report id)."""
        reply = requests.get(self._sim("reports"), timeout=5)
        reply.raise_for_status()
        result: list[dict[str, Any]] = reply.json()
        return result

    def play_reports(self) -> list[dict[str, Any]]:
        return [r for r in self.reports() if r["type"] == "play"]

    def recordings(self) -> list[dict[str, Any]]:
        """What the agent PUT to /recordings (query, headers, size, sha256 of each)."""
        reply = requests.get(self._sim("recordings"), timeout=5)
        reply.raise_for_status()
        result: list[dict[str, Any]] = reply.json()
        return result

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        reply = requests.get(self._sim("stats"), timeout=5)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def add(self, media_id: str, content: Path | bytes, **kwargs: Any) -> dict[str, Any]:
        """Publish a media file (see tests.support.source_sim.add_media)."""
        self.media[media_id] = add_media(self.content, media_id, content, **kwargs)
        return self.media[media_id]

    def publish(self, programs: list[dict[str, Any]], *, version: int | None = None,
                media: list[dict[str, Any]] | None = None, check: bool = True,
                **extra: Any) -> dict[str, Any]:
        """Serve a schedule of ``programs`` and every added media (next version by default)."""
        self.version = self.version + 1 if version is None else version
        doc = {"version": self.version, "device_id": DEVICE, "timezone": TZ,
               "media": list(self.media.values()) if media is None else media,
               "programs": programs, **extra}
        write_schedule(self.content, doc, check=check)
        return doc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``hardware`` need a real controller: skipped unless BROADCAST_HIL=1."""
    if HIL:
        return
    skip = pytest.mark.skip(reason="needs a real controller: run with BROADCAST_HIL=1 and the "
                                   "rig's BROADCAST_HIL_* variables (docs/hil.md)")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def whole_second(lead_s: float) -> float:
    """The first whole second at least ``lead_s`` from now: schedule starts are HH:MM:SS."""
    return float(math.ceil(time.time() + lead_s))


def program(program_id: str, items: list[str], start: float, **fields: Any) -> dict[str, Any]:
    """A scheduled media program starting at wall time ``start`` (today, local time)."""
    return {"id": program_id, "title": f"Chương trình {program_id}", "priority": "scheduled",
            "source": {"type": "media", "items": items}, "start": local_time(start, TZ),
            **fields}


def wait_ready(agent: AgentProcess, version: int, timeout: float = 15) -> dict[str, Any]:
    """Wait until ``version`` is applied and every media it needs is cached."""
    def ready() -> dict[str, Any]:
        status = agent.status()
        done = (status["source"]["schedule_version"] == version
                and status["cache"]["missing"] == 0)
        return status if done else {}
    return wait_for(ready, timeout, 0.1, f"schedule version {version} applied and cached "
                    f"({agent.log_tail(10)})")


def metric(agent: AgentProcess, name: str, **labels: str) -> float | None:
    """The value of the agent's Prometheus sample ``name`` (any prefix) with ``labels``."""
    text = requests.get(agent.health_url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(name) and all(sample.labels.get(k) == v
                                                  for k, v in labels.items()):
                return float(sample.value)
    return None


# A broker nobody listens on: MQTT is on, so events stay queued in the outbox for
# :func:`journal_events` to read.
UNREACHABLE_BROKER = {"brokers": ["mqtt://127.0.0.1:9"]}


def journal_events(agent: AgentProcess, event_type: str) -> list[dict[str, Any]]:
    """Events of ``event_type`` the agent queued for MQTT, read from its state database.
    The agent must have a broker configured (see ``UNREACHABLE_BROKER``): with MQTT off,
    events are not queued at all."""
    db = sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT payload FROM outbox WHERE channel='mqtt' AND kind=? "
                          "ORDER BY seq", (f"event:{event_type}",)).fetchall()
    finally:
        db.close()
    return [json.loads(payload) for (payload,) in rows]


def corrupt_cache_files(cache_dir: Path) -> list[str]:
    """Files of the content-addressed store whose sha256 is not their name."""
    bad = []
    for bucket in cache_dir.iterdir():
        if not bucket.is_dir() or bucket.name in ("partial", "tts"):
            continue
        for file in bucket.iterdir():
            if hashlib.sha256(file.read_bytes()).hexdigest() != file.name:
                bad.append(str(file))
    return bad


def capture_until(agent: AgentProcess, epoch: float) -> Capture:
    """The capture once it holds what left the card up to wall time ``epoch``."""
    time.sleep(max(0.0, epoch - time.time()))

    def covered() -> list[Capture]:
        capture = read_capture(agent.wav)
        return [capture] if capture.time_of(capture.frames) >= epoch else []
    return wait_for(covered, 5, 0.1, f"capture up to {epoch}")[0]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    """A running simulator over an empty content directory (publish before use)."""
    src = Source(tmp_path / "source")
    src.start()
    yield src
    src.stop()


AgentFactory = Callable[..., AgentProcess]
STOP_TIMEOUT_S = 15.0  # an agent told to stop (SIGTERM) must have exited by then


class StoppingAgents:
    """The agents of finished tests, told to stop and waited for in the background while
    the next test runs: a clean stop takes the agent one to two seconds (its threads end
    their current waits), which every test would otherwise spend idle at its teardown.
    One still running STOP_TIMEOUT_S after its SIGTERM is killed, and reported with its
    test and log when this worker's session ends."""

    def __init__(self) -> None:
        self._waiting: list[threading.Thread] = []
        self.failures: list[str] = []

    def stop(self, agent: AgentProcess, test: str) -> None:
        agent.terminate()
        waiting = threading.Thread(target=self._wait, args=(agent, test), daemon=True,
                                   name=f"stopping {agent.tmp.name} of {test}")
        waiting.start()
        self._waiting.append(waiting)

    def _wait(self, agent: AgentProcess, test: str) -> None:
        try:
            agent.stopped(STOP_TIMEOUT_S)
        except Exception as exc:  # reported at the end of the session
            self.failures.append(f"{test}: {exc}")
        finally:
            agent.kill()

    def join(self) -> list[str]:
        for waiting in self._waiting:
            waiting.join(STOP_TIMEOUT_S + 15)
        return self.failures


@pytest.fixture(scope="session")
def stopping_agents() -> Iterator[StoppingAgents]:
    agents = StoppingAgents()
    yield agents
    failures = agents.join()
    assert not failures, "agents that did not stop on SIGTERM:\n" + "\n".join(failures)


@pytest.fixture
def agent_factory(request: pytest.FixtureRequest, tmp_path: Path, source: Source,
                  stopping_agents: StoppingAgents) -> Iterator[AgentFactory]:
    """``agent_factory(start=True, **config_overrides)``: a real agent on ``source``, with
    its own directories; told to stop at teardown (killed if it does not within
    STOP_TIMEOUT_S, see :class:`StoppingAgents`), its log tail printed."""
    agents: list[AgentProcess] = []

    def make(start: bool = True, **overrides: Any) -> AgentProcess:
        home = tmp_path / f"agent{len(agents)}"
        home.mkdir()
        agent = AgentProcess(home, base_config(home, source.url, **overrides))
        agents.append(agent)
        return agent.start() if start else agent

    yield make
    for agent in agents:
        print(f"--- {agent.log_path} ---\n{agent.log_tail(60)}")
        if HIL:  # the rig's observers stop once the agent has
            try:
                agent.stop(STOP_TIMEOUT_S)
            finally:
                agent.kill()
        else:
            stopping_agents.stop(agent, request.node.nodeid)
