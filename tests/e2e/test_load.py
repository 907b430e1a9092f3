"""A tone programme under the load of issue 10, "Must show": CPU hogs on every core at
normal priority, a 1,500-program schedule published anew every poll and parsed, a burst
of signed MQTT commands (each ``sync_now`` fetches and parses that schedule again), and a
large download cut again and again, so that each resume hashes the part kept. The
clocked WAV sink must hold no 5 ms window of silence inside the tone.

Marked ``alone``: its hogs would starve the real-time tests beside it, so the Makefile runs
it on its own after the rest of the suite (``pytest -m alone``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.core.signing import canonical_json
from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import CheckedCentral, start_online
from tests.support.mosquitto import Mosquitto, TestClient
from tests.support.wavfile import Capture

pytestmark = pytest.mark.alone

TONE_S = 62.0
WINDOW = 240  # 5 ms at 48 kHz
SILENT_PEAK = 64  # a 5 ms window of the -6 dBFS tone peaks far above this
BIG_PROGRAMS = 1_500
REPUBLISH_S = 5.0  # source.poll_interval_s of the test agents
SYNC_COMMANDS = 100
VOLUME_COMMANDS = 400
DOWNLOAD_BYTES = 48 * 1024 * 1024


def silent_windows(capture: Capture, start: float, seconds: float) -> list[float]:
    """Start times of the 5 ms windows of ``[start, start + seconds]`` that carry no
    sound on the first channel."""
    first = capture.index_at(start)
    span = capture.samples[first:first + round(seconds * capture.rate), 0]
    windows = np.abs(span[:span.size // WINDOW * WINDOW].astype(np.int32)).reshape(-1, WINDOW)
    return [capture.time_of(first + int(n) * WINDOW)
            for n in np.flatnonzero(windows.max(axis=1) <= SILENT_PEAK)]


@pytest.fixture
def cpu_hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy loop per core, at normal priority."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    yield hogs
    for hog in hogs:
        hog.kill()
        hog.wait()


def big_schedule(tone: str) -> list[dict[str, Any]]:
    """Programs on a day that is not today: parsed at every fetch, never aired."""
    day = (datetime.now() + timedelta(days=30)).date().isoformat()
    return [{"id": f"p-big-{n}", "title": f"Bản tin {n}", "priority": "scheduled",
             "source": {"type": "media", "items": [tone]}, "dates": [day],
             "start": f"{n // 60 % 24:02d}:{n % 60:02d}:00"} for n in range(BIG_PROGRAMS)]


class Republisher:
    """Publishes the big schedule as a new version every poll, on its own thread."""

    def __init__(self, source: Source, programs: list[dict[str, Any]]) -> None:
        self._source, self._programs = source, programs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="republisher", daemon=True)
        self.published = 0

    def __enter__(self) -> Republisher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(REPUBLISH_S):
            self._source.publish(self._programs)
            self.published += 1


def command_burst(central: CheckedCentral) -> list[dict[str, Any]]:
    """``sync_now`` commands, each a fetch and parse of the big schedule, among
    ``set_volume`` commands that keep the volume where it is (persisted at each one)."""
    commands = [central.command("set_volume", {"volume": 100}) for _ in range(VOLUME_COMMANDS)]
    for n in range(SYNC_COMMANDS):
        commands.insert(n * len(commands) // SYNC_COMMANDS, central.command("sync_now", {}))
    return commands


def test_a_tone_under_load_holds_no_5_ms_of_silence(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral, raw_client: TestClient,
        cpu_hogs: list[subprocess.Popen[bytes]]) -> None:
    tone = source.add("m-tone", media.tone(tmp_path / "tone.wav", 550, TONE_S))
    source.publish([])
    agent: AgentProcess = start_online(agent_factory, broker, central)
    wait_ready(agent, source.version)

    source.add("m-big", os.urandom(DOWNLOAD_BYTES), duration_s=3600.0)
    source.set_faults(truncate=True)  # every request of it ends halfway: resume, rehash
    start = whole_second(8)
    programs = [program("p-tone", ["m-tone"], start), *big_schedule(tone["id"])]
    source.publish(programs)
    with Republisher(source, programs) as republisher:
        time.sleep(max(0.0, start + 2 - time.time()))
        burst = command_burst(central)
        raw_client.publish_many(f"{central.base}/commands", [canonical_json(c) for c in burst])
        time.sleep(max(0.0, start + TONE_S / 2 - time.time()))
        source.set_faults(truncate=False)  # the last resume completes and is verified
        capture = capture_until(agent, start + TONE_S)

    silent = silent_windows(capture, start + 0.01, TONE_S - 0.02)
    assert silent == [], f"{len(silent)} silent 5 ms windows, the first at " \
        f"{[round(t - start, 3) for t in silent[:10]]} s into the tone"
    requests = source.stats()["requests"]
    print(f"under load: {republisher.published} schedules published, "
          f"{requests.get('schedule_200', 0)} fetched whole, {requests.get('media', 0)} "
          f"media requests")
    assert requests.get("schedule_200", 0) >= republisher.published
    assert requests.get("media", 0) >= 3, "the download was not resumed"
    wait_for(lambda: agent.status()["cache"]["missing"] == 0, 30, 0.5,
             "the resumed download verified and cached")
    ids = {c["id"] for c in burst}
    wait_for(lambda: ids <= {a["command_id"] for a in central.payloads("acks")}, 60, 0.5,
             "an ack for every command of the burst")
    statuses = {a["status"] for a in central.payloads("acks") if a["command_id"] in ids}
    assert "rejected" not in statuses and "failed" not in statuses, statuses
