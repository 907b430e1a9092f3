"""How late this machine wakes a real-time thread, with no agent running: the floor under
every dropout figure (bench_load). A thread at the playout engine's SCHED_FIFO priority
sleeps 1 ms, over and over, for a minute: once on the idle machine, once beside a CPU
hog on every core at normal priority (tests/e2e/test_load.py's). Each wake's lateness is
the time past the sleep it asked for; a wake later than the card's minimum lead (what the
engine leaves in the card when it renders a period) would have been a gap had the engine
been the thread. On a virtual machine the hypervisor's steal stalls every thread alike,
whatever its priority; it is counted beside. Run it on a controller to see what its
kernel allows.

Run: ``.venv/bin/python -m bench.bench_rt_latency``
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

from agent.playout.host import CARD_BUFFER_S, MIN_LEAD_S, PERIOD_S
from bench.common import BenchRun, fmt, markdown_table, percentile, steal_s
from tests.support.load import CpuHogs
from tests.support.wake_probe import WakeProbe

PHASE_S = 60.0


def phase_row(name: str, load: AbstractContextManager[object]) -> list[object]:
    stolen = steal_s()
    with load, WakeProbe(0.001) as probe:
        time.sleep(PHASE_S)
    stolen = steal_s() - stolen
    ms = [1000 * v for v in probe.late_s]
    return [name, "SCHED_FIFO" if probe.realtime else "normal (not permitted)", len(ms),
            " / ".join(fmt(percentile(ms, q), 2) for q in (50, 99, 99.9)), fmt(max(ms), 1),
            len(probe.stalls), fmt(stolen, 2)]


def main() -> str:
    run = BenchRun("bench_rt_latency", "Real-time wake-up latency of the machine")
    rows = [phase_row("idle", nullcontext()), phase_row("CPU hog on every core", CpuHogs())]
    headers = ["machine", "policy", "wakes", "late p50 / p99 / p99.9 ms", "late max ms",
               f"wakes later than {MIN_LEAD_S * 1000:.0f} ms", "steal s, all CPUs"]
    body = ["\n\n".join(__doc__.split("\n\n")[:1]).replace("\n", " "), "",
            markdown_table(headers, rows), "",
            f"The card's minimum lead: {MIN_LEAD_S * 1000:.0f} ms (agent/playout/host.py: "
            f"{CARD_BUFFER_S * 1000:.0f} ms in the card after each {PERIOD_S * 1000:.0f} ms "
            "period)."]
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
