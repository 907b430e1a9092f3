"""How late this machine wakes a real-time thread, with no agent running: the floor under
every dropout figure (bench_load). A thread at the playout engine's SCHED_FIFO priority
sleeps 1 ms, over and over, for a minute: once on the idle machine, once beside a CPU
hog on every core at normal priority (tests/e2e/test_load.py's). Each wake's lateness is
the time past the 1 ms it asked for; a wake later than the card's minimum lead (what the
engine leaves in the card when it renders a period) would have been a gap had the engine
been the thread. On a virtual machine the hypervisor's steal stalls every thread alike,
whatever its priority; it is counted beside. Run it on a controller to see what its
kernel allows.

Run: ``.venv/bin/python -m bench.bench_rt_latency``
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

from agent.playout.host import CARD_BUFFER_S, PERIOD_S
from bench.common import BenchRun, fmt, markdown_table, percentile, steal_s
from drivers.audio.base import AUDIO_RT_PRIORITY, request_realtime
from drivers.thread import NamedThread
from tests.support.load import CpuHogs

PHASE_S = 60.0
SLEEP_S = 0.001
MIN_LEAD_S = CARD_BUFFER_S - PERIOD_S


def lateness_s(seconds: float) -> tuple[list[float], bool]:
    """Every wake's lateness over ``seconds`` on a thread of its own at the engine's
    priority, and whether it got that priority."""
    late: list[float] = []
    realtime: list[bool] = []

    def wake_up() -> None:
        realtime.append(request_realtime(AUDIO_RT_PRIORITY))
        end = time.monotonic() + seconds
        while (asleep := time.monotonic()) < end:
            time.sleep(SLEEP_S)
            late.append(time.monotonic() - asleep - SLEEP_S)

    thread = NamedThread(target=wake_up, name="rt-latency")
    thread.start()
    thread.join(seconds + 10)
    if thread.is_alive():
        raise RuntimeError(f"the rt-latency thread ran past {seconds + 10:.0f} s")
    return late, realtime[0]


def phase_row(name: str, load: AbstractContextManager[object]) -> list[object]:
    stolen = steal_s()
    with load:
        late, realtime = lateness_s(PHASE_S)
    stolen = steal_s() - stolen
    ms = [1000 * v for v in late]
    return [name, "SCHED_FIFO" if realtime else "normal (not permitted)", len(ms),
            " / ".join(fmt(percentile(ms, q), 2) for q in (50, 99, 99.9)), fmt(max(ms), 1),
            sum(v > 1000 * MIN_LEAD_S for v in ms), fmt(stolen, 2)]


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
