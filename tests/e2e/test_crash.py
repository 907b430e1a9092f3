"""Power cuts end to end: the real agent is killed with SIGKILL (its whole process group,
decoders included) 30 times at random moments while it downloads and plays, then runs
once more cleanly. Afterwards the cache holds only files whose sha256 is their name, every
play that started (a ``play_started`` event) has exactly one play report at the source,
and the interrupted download resumed instead of starting over."""

from __future__ import annotations

import itertools
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    DEVICE,
    TOKEN,
    UNREACHABLE_BROKER,
    AgentFactory,
    Source,
    corrupt_cache_files,
    journal_events,
    metric,
    program,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.schemas import validate
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import media_bytes

# The kills span the programmes (about 1.6 s a kill, 3 s a programme): the first few cut
# the download, then each programme is cut about twice, on air or between two. Kills
# after the last programme would only land on an idle agent again.
KILLS = 30
STARTUP_S = 0.6  # about when a started agent has its threads running
KILL_AFTER_S = (0.3, 1.5)  # random time from then to the kill (some land in the startup)
BIG_BYTES = 8 * 1024 * 1024
RATE_BYTES_PER_S = 2 * 1024 * 1024  # slow enough for a download to span several kills
IN_FLIGHT_BYTES = 256 * 1024  # what a kill may lose of a download: socket buffers, a chunk

PROGRAM_EVERY_S = 3
PROGRAMS = 14  # over about when the kills are


class ThrottledSimulator(SourceSimulator):
    """The simulator with a bandwidth cap on media bodies: it pauses after each chunk it
    sends, so a download lasts long enough to be cut by a kill."""

    def add_media_bytes(self, media_id: str, n: int) -> None:
        super().add_media_bytes(media_id, n)
        time.sleep(n / RATE_BYTES_PER_S)


def query_state(agent: AgentProcess, sql: str, *args: Any) -> Any:
    """One value from the agent's state database."""
    db = sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(sql, args).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def durable_bytes(agent: AgentProcess, sha256: str) -> int:
    """How much of a download the cache holds as safe to resume from (the whole file once
    it is published)."""
    return int(query_state(agent, "SELECT durable_bytes FROM media_cache WHERE sha256=?",
                           sha256) or 0)


def on_air(agent: AgentProcess) -> str:
    """What the agent is doing at a kill: "on air", "idle", or "down" (not answering yet)."""
    try:
        reply = requests.get(agent.health_url + "/status", timeout=0.2)
        return "on air" if reply.json()["playing"] else "idle"
    except (requests.RequestException, ValueError):
        return "down"


def play_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["program_id"], record["media_id"], record["started_at"]


@pytest.mark.slow
def test_thirty_kills_lose_no_report_corrupt_no_cache_entry_and_resume_downloads(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    rng = random.Random(20261123)
    source.add("m-1", media.tone(tmp_path / "tone.wav", 1000, 2.0))
    big = source.add("m-big", media_bytes(BIG_BYTES, seed=7), duration_s=600.0)
    first = whole_second(4)
    source.publish([program(f"p-{k}", ["m-1"], first + PROGRAM_EVERY_S * k)
                    for k in range(PROGRAMS)])
    source.stop()  # the throttled simulator takes its port
    sim = ThrottledSimulator(source.content, DEVICE, TOKEN, port=source.port).start()
    try:
        # A program cut by a kill is not started again from its beginning after the restart.
        agent = agent_factory(late_start_grace_s=1, mqtt=UNREACHABLE_BROKER)
        wait_for(lambda: agent.status()["cache"]["items"] == 1, 10, 0.05,
                 "the schedule applied and the small media cached")
        began = time.monotonic()
        resumable = [durable_bytes(agent, big["sha256"])]
        moments: list[str] = []
        for n in range(KILLS):
            if n % 3:  # every third kill may land in the startup; the others in a running
                # agent, however slow the machine is to start one (a fresh-clone run
                # under load killed 28 of 30 before they answered: one cut download)
                wait_for(lambda: on_air(agent) != "down", 15, 0.05, "the agent answering")
            time.sleep(rng.uniform(*KILL_AFTER_S))
            moments.append(on_air(agent))
            agent.kill()
            resumable.append(durable_bytes(agent, big["sha256"]))
            agent.start(wait=False)
            time.sleep(STARTUP_S)
        killing_s = time.monotonic() - began
        agent.kill()
        agent.start()

        wait_for(lambda: agent.status()["cache"]["missing"] == 0, 30, 0.2, "all media cached")
        last_end = first + PROGRAM_EVERY_S * (PROGRAMS - 1) + 2.0
        wait_for(lambda: time.time() > last_end and agent.status()["playing"] is None, 30,
                 0.1, "the last program over")
        wait_for(lambda: metric(agent, "outbox_depth", channel="report") == 0, 20, 0.2,
                 "the report outbox to drain")
        assert agent.stop() == 0
        assert query_state(agent, "SELECT COUNT(*) FROM outbox WHERE channel='report'") == 0

        cache_dir = Path(agent.config["cache"]["dir"])
        assert corrupt_cache_files(cache_dir) == []
        # Resuming: what the cache may resume from never shrinks across kills, several kills
        # cut the download, and (no reboot in between, so every byte written is kept) each
        # cut cost only what was in flight, far less than fetching the file again.
        stats = sim.stats()
        fetched = stats["media_bytes"]
        cuts = sum(1 for a, b in itertools.pairwise(resumable) if 0 < b < big["size"] and a < b)
        print(f"{KILLS} kills in {killing_s:.0f} s ({dict(Counter(moments))}); m-big cut {cuts} "
              f"times, fetched in {stats['requests']['media'] - 1} requests, "
              f"{fetched['m-big'] / big['size']:.3f} x its size; resumable bytes at each kill: "
              f"{resumable}")
        assert resumable == sorted(resumable), "a download went back instead of resuming"
        assert cuts >= 2, "the kills never cut the download: nothing shows resuming"
        assert fetched["m-1"] == source.media["m-1"]["size"], fetched
        interrupted = stats["requests"]["media"] - 2  # the small file, the last complete one
        assert fetched["m-big"] <= big["size"] + interrupted * IN_FLIGHT_BYTES, fetched

        started = Counter(play_key(e) for e in journal_events(agent, "play_started"))
        reports = [r for r in sim.reports() if r["type"] == "play"]
        for report in reports:
            validate("report", report)
        reported = Counter(play_key(r) for r in reports)
        assert started, "no play ever started: the kills left no time to play"
        assert "on air" in moments, f"no kill cut a play: {moments}"
        assert reported == started, {"started only": started - reported,
                                     "reported only": reported - started}
        outcomes = Counter(r["outcome"] for r in reports)
        # An item a kill cut resumes where it would be (the grace is 1 s), so the next
        # program may preempt it.
        assert set(outcomes) <= {"completed", "stopped", "preempted"}, outcomes
        print(f"plays: {dict(outcomes)}")
    finally:
        sim.stop()
