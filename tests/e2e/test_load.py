"""A tone programme under the load of issue 10, "Must show": CPU hogs on every core at
normal priority, a 1,500-program schedule published anew every poll and parsed, a burst
of signed MQTT commands (each ``sync_now`` fetches and parses that schedule again), and a
large download cut again and again, so that each resume hashes the part kept. The
clocked WAV sink must hold no 5 ms window of silence inside the tone that the machine did
not make: this virtual machine now and then holds every thread off its CPUs for some
20-50 ms, whatever its priority (docs/benchmarks.md, bench_rt_latency and bench_load), so
a real-time thread of the test's own, outside the agent (tests/support/wake_probe.py),
runs beside it. A silent window within a second of that thread waking later than the
card's minimum lead is the machine's, and is reported; any other fails the test.

Marked ``alone``: its hogs would starve the real-time tests beside it, so the Makefile runs
it on its own after the rest of the suite (``pytest -m alone``)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.signing import canonical_json
from agent.playout.host import MIN_LEAD_S
from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import CheckedCentral, start_online
from tests.support.load import (
    CpuHogs,
    Republisher,
    big_schedule,
    command_burst,
    silent_windows,
)
from tests.support.mosquitto import Mosquitto, TestClient
from tests.support.wake_probe import WakeProbe

pytestmark = pytest.mark.alone

# The heavy part of the load is at the start of the tone: the burst is screened and acked
# within about 9 s (measured alone), and the download is cut at every request for the
# first CUT_S. The tone goes on TONE_S - CUT_S after that under the hogs and the
# republished schedule, while the last resume completes and is verified.
CUT_S = 31.0
TONE_S = 44.0
DOWNLOAD_BYTES = 48 * 1024 * 1024
PROBE_SLEEP_S = 0.005


@pytest.fixture
def cpu_hogs() -> Iterator[CpuHogs]:
    with CpuHogs() as hogs:
        yield hogs


def test_a_tone_under_load_holds_no_5_ms_of_silence(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral, raw_client: TestClient,
        cpu_hogs: CpuHogs) -> None:
    tone = source.add("m-tone", media.tone(tmp_path / "tone.wav", 550, TONE_S))
    source.publish([])
    agent: AgentProcess = start_online(agent_factory, broker, central)
    wait_ready(agent, source.version)

    source.add("m-big", os.urandom(DOWNLOAD_BYTES), duration_s=3600.0)
    source.set_faults(truncate=True)  # every request of it ends halfway: resume, rehash
    start = whole_second(8)
    programs = [program("p-tone", ["m-tone"], start), *big_schedule(tone["id"])]
    source.publish(programs)
    with Republisher(lambda: source.publish(programs)) as republisher, \
            WakeProbe(PROBE_SLEEP_S) as probe:
        time.sleep(max(0.0, start + 2 - time.time()))
        burst = command_burst(central)
        raw_client.publish_many(f"{central.base}/commands", [canonical_json(c) for c in burst])
        time.sleep(max(0.0, start + CUT_S - time.time()))
        source.set_faults(truncate=False)  # the last resume completes and is verified
        capture = capture_until(agent, start + TONE_S)

    silent = silent_windows(capture, start + 0.01, TONE_S - 0.02)
    # Without real-time priority the probe's lateness says nothing of the machine.
    machine = [t for t in silent if probe.realtime and probe.worst_near(t) > 0]
    agent_made = [round(t - start, 3) for t in silent if t not in machine]
    assert agent_made == [], f"{len(agent_made)} silent 5 ms windows the machine did not " \
        f"make (its real-time thread was on time), the first at {agent_made[:10]} s into " \
        "the tone"
    if machine:
        warnings.warn(f"{len(machine)} silent 5 ms windows where the machine stalled a "
                      f"real-time thread outside the agent by "
                      f"{max(probe.worst_near(t) for t in machine) * 1000:.1f} ms (more than "
                      f"the card's {MIN_LEAD_S * 1000:.0f} ms minimum lead), at "
                      f"{[round(t - start, 3) for t in machine[:10]]} s into the tone",
                      stacklevel=1)
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
