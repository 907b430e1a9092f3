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

import json
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Self

from agent.playout.host import CARD_BUFFER_S, PERIOD_S
from bench.common import REPO, BenchRun, fmt, markdown_table, percentile, steal_s
from drivers.audio.base import AUDIO_RT_PRIORITY, request_realtime
from drivers.thread import NamedThread
from tests.support.load import CpuHogs

PHASE_S = 60.0
MIN_LEAD_S = CARD_BUFFER_S - PERIOD_S


class WakeProbe:
    """A process of its own (one interpreter, one busy thread: no other thread's GIL to wait
    for) whose thread at the engine's SCHED_FIFO priority sleeps ``sleep_s`` over and over
    for the time of a ``with``: the lateness of every wake, and the wall time of each later
    than MIN_LEAD_S. Outside the agent, it tells whether the machine stalled a real-time
    thread when the agent's card ran dry."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s
        self.late_s: list[float] = []
        self.stalls: list[tuple[float, float]] = []  # (wall time woken, lateness s)
        self.realtime = False
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_rt_latency", "--probe", str(self.sleep_s)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        out = self._process.communicate(timeout=30)[0]  # closing its stdin stops it
        if self._process.returncode != 0:
            raise RuntimeError(f"the wake probe exited with {self._process.returncode}")
        found = json.loads(out)
        self.realtime, self.late_s = found["realtime"], found["late_s"]
        self.stalls = [(at, late) for at, late in found["stalls"]]

    def worst_near(self, wall: float, within_s: float = 1.0) -> float:
        """The latest wake within ``within_s`` of ``wall``, in seconds (0 when none was
        later than MIN_LEAD_S)."""
        return max((late for at, late in self.stalls if abs(at - wall) <= within_s),
                   default=0.0)


def probe(sleep_s: float) -> None:
    """WakeProbe's process: wakes until its stdin closes, then prints what it found."""
    closed = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        closed.set()

    NamedThread(target=until_stdin_closes, name="probe-stdin", daemon=True).start()
    realtime = request_realtime(AUDIO_RT_PRIORITY)
    late_s: list[float] = []
    stalls: list[tuple[float, float]] = []
    while not closed.is_set():
        asleep = time.monotonic()
        time.sleep(sleep_s)
        late = time.monotonic() - asleep - sleep_s
        late_s.append(round(late, 6))
        if late > MIN_LEAD_S:
            stalls.append((time.time(), late))
    json.dump({"realtime": realtime, "late_s": late_s, "stalls": stalls}, sys.stdout)


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
    if sys.argv[1:2] == ["--probe"]:
        probe(float(sys.argv[2]))
    else:
        print(main())
