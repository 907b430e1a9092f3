"""Shared fixtures of the end-to-end tests: a simulated source and real agent processes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.simulator import SourceSimulator
from tests.support.agentproc import AgentProcess, base_config, free_port, local_time, wait_for
from tests.support.source_sim import add_media, write_schedule
from tests.support.wavfile import Capture, read_capture

DEVICE = "xa-test-01"
TOKEN = "test-token"
TZ = "Asia/Ho_Chi_Minh"


class Source:
    """One test's source system: a content directory served by the real simulator on a
    port of its own, which survives :meth:`stop`/:meth:`start` (an outage)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.content = root / "content"
        self.content.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.version = 0
        self.media: dict[str, dict[str, Any]] = {}
        self.sim: SourceSimulator | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self, **kwargs: Any) -> SourceSimulator:
        self.sim = SourceSimulator(self.content, DEVICE, TOKEN, port=self.port, **kwargs).start()
        return self.sim

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    @property
    def running(self) -> SourceSimulator:
        assert self.sim is not None, "the simulator is stopped"
        return self.sim

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

    def play_reports(self) -> list[dict[str, Any]]:
        return [r for r in self.running.reports() if r["type"] == "play"]


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
    def ready() -> dict[str, Any] | None:
        status = agent.status()
        done = (status["source"]["schedule_version"] == version
                and status["cache"]["missing"] == 0)
        return status if done else None
    return wait_for(ready, timeout, 0.1, f"schedule version {version} applied and cached "
                    f"({agent.log_tail(10)})")


def capture_until(agent: AgentProcess, epoch: float) -> Capture:
    """The capture once it holds what left the card up to wall time ``epoch``."""
    time.sleep(max(0.0, epoch - time.time()))

    def covered() -> Capture | None:
        capture = read_capture(agent.wav)
        return capture if capture.time_of(capture.frames) >= epoch else None
    return wait_for(covered, 5, 0.1, f"capture up to {epoch}")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    """A running simulator over an empty content directory (publish before use)."""
    src = Source(tmp_path / "source")
    src.start()
    yield src
    src.stop()


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def agent_factory(tmp_path: Path, source: Source) -> Iterator[AgentFactory]:
    """``agent_factory(start=True, **config_overrides)``: a real agent on ``source``, with
    its own directories; stopped (or killed) at teardown, its log tail printed."""
    agents: list[AgentProcess] = []

    def make(start: bool = True, **overrides: Any) -> AgentProcess:
        home = tmp_path / f"agent{len(agents)}"
        home.mkdir()
        agent = AgentProcess(home, base_config(home, source.url, **overrides))
        agents.append(agent)
        return agent.start() if start else agent

    yield make
    for agent in agents:
        try:
            agent.stop()
        finally:
            agent.kill()
            print(f"--- {agent.log_path} ---\n{agent.log_tail(60)}")
