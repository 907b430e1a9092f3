"""A real-time thread outside the agent, to tell the machine's stalls from the agent's: on a
virtual machine the hypervisor now and then holds every thread off its CPUs, whatever its
priority (bench/bench_rt_latency.py measures how often). Used by bench_rt_latency,
bench_load and tests/e2e/test_load.py.

    python -m tests.support.wake_probe 0.005    # wakes until stdin closes, prints JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Self

from agent.playout.host import MIN_LEAD_S
from drivers.audio.base import AUDIO_RT_PRIORITY, request_realtime
from drivers.thread import NamedThread
from tests.support.agentproc import REPO


class WakeProbe:
    """A process of its own (an interpreter with one waking thread: no other thread's GIL to wait
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
            [sys.executable, "-m", "tests.support.wake_probe", str(self.sleep_s)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        if self._process.stdout.readline() != "waking\n":
            self._process.kill()
            raise RuntimeError(f"the wake probe exited with {self._process.wait()}")
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

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
    print("waking", flush=True)
    while not closed.is_set():
        asleep = time.monotonic()
        time.sleep(sleep_s)
        late = time.monotonic() - asleep - sleep_s
        late_s.append(round(late, 6))
        if late > MIN_LEAD_S:
            stalls.append((time.time(), late))
    json.dump({"realtime": realtime, "late_s": late_s, "stalls": stalls}, sys.stdout)


if __name__ == "__main__":
    probe(float(sys.argv[1]))
