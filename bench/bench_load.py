"""Dropouts under load (issue 10): a tone programme plays for ``LOAD_MINUTES`` minutes while
the load of tests/e2e/test_load.py runs the whole time: CPU hogs on every core at normal
priority, a 1,500-program schedule republished every poll, a burst of 500 signed commands
(100 ``sync_now``) every minute, and a new 48 MB download every two minutes, cut halfway
at every request and resumed (each resume rehashes the part kept).

The agent runs the shipped config/agent.yaml as a test box must change it
(tests/support/shipped.py), on a broker for the commands, with two changes that make the
load: the schedule is polled every 5 s (60 s as shipped) and a cut download is resumed
after at most 2 s (600 s as shipped).

Counted: 5 ms windows of the tone that went silent on the clocked WAV sink, and the
agent's own ``card_underrun_seconds``.

Run: ``.venv/bin/python -m bench.bench_load`` (``BENCH_LOAD_MINUTES`` to shorten it)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import BenchRun, fmt, markdown_table, scratch_dir
from tests.conftest import (
    TOKEN,
    Source,
    capture_until,
    metric,
    program,
    wait_ready,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess
from tests.support.central import Central
from tests.support.central_checks import DEVICE, KEY, mqtt_config
from tests.support.load import (
    CpuHogs,
    Republisher,
    big_schedule,
    command_burst,
    silent_windows,
)
from tests.support.mosquitto import Mosquitto
from tests.support.shipped import test_box_config

LOAD_MINUTES = float(os.environ.get("BENCH_LOAD_MINUTES", "10"))
BURST_EVERY_S = 60.0
DOWNLOAD_EVERY_S = 120.0
DOWNLOAD_BYTES = 48 * 1024 * 1024
POLL_S = 5
RESUME_BACKOFF_S = 2


def under_load(tmp: Path, tone_s: float) -> tuple[list[float], float, int, int, int]:
    """(silent window times, card_underrun_seconds, bursts, downloads, schedules)."""
    source = Source(tmp / "source")
    source.start()
    broker = Mosquitto.start(tmp / "mosquitto", {DEVICE: []})
    home = tmp / "agent"
    home.mkdir()
    config = test_box_config(home, DEVICE, source.url, TOKEN)
    config["source"].update(poll_interval_s=POLL_S, max_backoff_s=RESUME_BACKOFF_S)
    config.update(mqtt_config(broker))
    agent = AgentProcess(home, config)
    try:
        tone = source.add("m-tone", media.tone(tmp / "tone.wav", 550, tone_s))
        source.publish([])
        agent.start()
        wait_ready(agent, source.version, timeout=60)
        source.set_faults(truncate=True)
        start = whole_second(8)
        programs = [program("p-tone", ["m-tone"], start), *big_schedule(tone["id"])]
        source.publish(programs)
        bursts = downloads = 0
        with Central(broker, DEVICE, KEY, tls=True) as central, CpuHogs(), \
                Republisher(lambda: source.publish(programs)) as republisher:
            central.wait_online()
            while time.time() < start + tone_s:
                elapsed = max(0.0, time.time() - start)
                if elapsed >= downloads * DOWNLOAD_EVERY_S:
                    downloads += 1
                    source.add(f"m-big-{downloads}", os.urandom(DOWNLOAD_BYTES),
                               duration_s=3600.0)
                if elapsed >= bursts * BURST_EVERY_S:
                    bursts += 1
                    for command in command_burst(central):
                        central.send(command)
                time.sleep(1.0)
            capture = capture_until(agent, start + tone_s)
            underrun_s = metric(agent, "card_underrun_seconds") or 0.0
        silent = silent_windows(capture, start + 0.01, tone_s - 0.02)
        return silent, underrun_s, bursts, downloads, republisher.published
    finally:
        agent.stop()
        agent.kill()
        broker.stop()
        source.stop()


def main() -> str:
    run = BenchRun("bench_load", f"Dropouts under load ({LOAD_MINUTES:g} min)")
    tone_s = LOAD_MINUTES * 60
    with scratch_dir("bench-load") as tmp:
        silent, underrun_s, bursts, downloads, schedules = under_load(tmp, tone_s)
    windows = round(tone_s / 0.005)
    rows: list[list[object]] = [
        ["silent 5 ms windows in the tone", f"{len(silent)} of {windows}"],
        ["card_underrun_seconds (the agent's own count)", fmt(underrun_s, 4)],
        ["schedules republished (1,500 programs each)", schedules],
        ["command bursts (500 signed commands, 100 sync_now)", bursts],
        ["48 MB downloads, cut halfway at every request", downloads]]
    first = ", ".join(f"{t - silent[0]:.3f}" for t in silent[:10]) if silent else "none"
    body = [
        __doc__.split("\n\n")[0].replace("\n", " "),
        "",
        markdown_table(["measure", "value"], rows),
        "",
        f"Target: 0 dropouts. Silent windows (s after the first): {first}.",
    ]
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
