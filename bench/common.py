"""Helpers shared by the benchmarks: statistics, /proc sampling of a process tree, test
media, the real agent against the source simulator, and markdown output.

The machine the benchmarks run on is shared and noisy, so results are percentiles over
many samples, and every section records the load average around its run.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import media
from tests.support.agentproc import AgentProcess, base_config
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import write_schedule

REPO = Path(__file__).resolve().parents[1]
DEVICE_ID = "xa-test-01"  # what tests.support.agentproc.base_config configures
SOURCE_TOKEN = "test-token"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


# --- statistics ----------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of non-empty ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


# --- /proc ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if the process is gone.
    Index 0 is field 3 (state) of proc(5)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    pending = [root]
    while pending:
        kids = children.get(pending.pop(), [])
        found.extend(kids)
        pending.extend(kids)
    return found


@dataclass(frozen=True)
class ThreadTimes:
    cpu_s: float  # on a CPU
    waited_s: float  # runnable, waiting for a CPU (schedstat's run_delay)
    runs: int  # times put on a CPU: wake-ups and returns from preemption (pcount)


def thread_times(root: int, names: Collection[str]) -> dict[str, ThreadTimes]:
    """Seconds so far of the live threads whose kernel name (drivers/thread.py) is one of
    ``names``, in ``root`` and its descendants, summed by name (a name no thread has maps
    to zero); from schedstat, to the nanosecond. One walk of the tree for all names."""
    ns = {name: [0, 0, 0] for name in names}
    for pid in [root, *descendants(root)]:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                totals = ns.get((task / "comm").read_text().strip())
                if totals is not None:
                    for i, field in enumerate((task / "schedstat").read_text().split()):
                        totals[i] += int(field)
            except OSError:  # the thread or its process ended meanwhile
                continue
    return {name: ThreadTimes(cpu / 1e9, waited / 1e9, runs)
            for name, (cpu, waited, runs) in ns.items()}


def steal_s() -> float:
    """CPU time the hypervisor gave to others since boot, all CPUs summed: a virtual
    machine's threads stall then, whatever their priority."""
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(cpu[8]) / TICKS_PER_S


def _status_kb(path: str, key: str) -> int:
    """A ``key:  N kB`` line of a /proc file, 0 if the process is gone."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return _status_kb(f"/proc/{pid}/status", "VmRSS")


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (libvlc in every worker) counted once overall."""
    return _status_kb(f"/proc/{pid}/smaps_rollup", "Pss")


@dataclass(frozen=True)
class TreeMemory:
    agent_rss_kb: int
    tree_rss_kb: int  # sum of RSS: counts pages shared between processes more than once
    tree_pss_kb: int  # sum of PSS: what the tree really costs the machine
    processes: int


def tree_memory(root: int) -> TreeMemory:
    pids = [root, *descendants(root)]
    return TreeMemory(agent_rss_kb=rss_kb(root), tree_rss_kb=sum(rss_kb(p) for p in pids),
                      tree_pss_kb=sum(pss_kb(p) for p in pids), processes=len(pids))


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by ``root`` and all its descendants, dead ones included.

    A child that exited and was reaped (the agent waits for every decoder worker) is in
    its parent's cutime/cstime, so the sum of utime+stime+cutime+cstime over the root and
    its live descendants only ever grows, however short-lived the workers are.
    """
    ticks = 0
    for pid in [*descendants(root), root]:
        fields = _stat_fields(pid)
        if fields is not None:  # utime, stime, cutime, cstime: fields 14-17 of proc(5)
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / TICKS_PER_S


@dataclass(frozen=True)
class TreeSample:
    mono: float
    cpu_s: float
    memory: TreeMemory


def sample_tree(root: int, duration_s: float, interval_s: float = 1.0) -> list[TreeSample]:
    """Samples of CPU time and memory of the tree every ``interval_s`` for ``duration_s``."""
    samples: list[TreeSample] = []
    deadline = time.monotonic() + duration_s
    next_at = time.monotonic()
    while next_at <= deadline:
        time.sleep(max(0.0, next_at - time.monotonic()))
        samples.append(TreeSample(time.monotonic(), tree_cpu_s(root), tree_memory(root)))
        next_at += interval_s
    return samples


def cpu_shares(samples: Sequence[TreeSample]) -> list[float]:
    """Per-interval CPU use between consecutive samples, in % of one core."""
    return [100 * (b.cpu_s - a.cpu_s) / (b.mono - a.mono)
            for a, b in pairwise(samples)]


def overall_cpu_share(samples: Sequence[TreeSample]) -> float:
    """CPU use over the whole sampled window, in % of one core."""
    first, last = samples[0], samples[-1]
    return 100 * (last.cpu_s - first.cpu_s) / (last.mono - first.mono)


# --- the machine and the run ---------------------------------------------------------
def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def machine_description() -> str:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    mem_mb = _status_kb("/proc/meminfo", "MemTotal") // 1024
    import vlc
    libvlc = vlc.libvlc_get_version().decode()
    return (f"{model}, {os.cpu_count()} cores (nproc), {mem_mb} MB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}, libvlc {libvlc}")


def command_line() -> str:
    """The command that is running, as it was typed."""
    return " ".join(sys.orig_argv)


class BenchRun:
    """Records when a bench ran and the load around it; renders its markdown section."""

    def __init__(self, name: str, title: str, command: str | None = None) -> None:
        self.name = name
        self.title = title
        self.command = command or command_line()
        self.started = datetime.now().astimezone()
        self.load_before = load_average()
        self._mono = time.monotonic()

    def section(self, body: str) -> str:
        took = time.monotonic() - self._mono
        alone = f".venv/bin/python -m bench.{self.name}"
        also = "" if self.command.endswith(f"-m bench.{self.name}") else \
            f" (this bench alone: `{alone}`)"
        return (f"## {self.title}\n\n"
                f"- Command: `{self.command}`{also}\n"
                f"- Run: {self.started:%Y-%m-%d %H:%M %Z}, took {took:.0f} s; load average "
                f"(1/5/15 min) {self.load_before} before, {load_average()} after\n\n"
                f"{body.strip()}\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- media ---------------------------------------------------------------------------
def make_tone_wav(path: Path, seconds: float, frequency: float = 1000.0,
                  rate: int = 48000) -> Path:
    """A stereo s16 sine at half scale."""
    return media.tone(path, frequency, seconds, level_dbfs=-6.02, rate=rate)


def make_mp3(path: Path, seconds: float, kbit_s: int = 128) -> Path:
    """Pink noise encoded by lame at a constant ``kbit_s``."""
    with tempfile.TemporaryDirectory(prefix="bench-mp3-") as scratch:
        noise = media.pink_noise(Path(scratch) / "noise.wav", seconds, rate=44100)
        return media.to_mp3(noise, path, kbit_s)


# --- the real agent ------------------------------------------------------------------
@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_agent(tmp: Path, schedule: dict[str, Any],
                  config: Callable[[str], dict[str, Any]] | None = None,
                  **config_overrides: Any) -> Iterator[tuple[AgentProcess, SourceSimulator]]:
    """The real agent (clocked WAV sink, simulated amplifier) syncing ``schedule`` from a
    source simulator whose content directory is ``tmp / "content"`` (add media there
    first). Its config is ``config(source_url)``, by default the tests' base_config with
    ``config_overrides``."""
    content = tmp / "content"
    content.mkdir(exist_ok=True)
    write_schedule(content, schedule)
    sim = SourceSimulator(content, DEVICE_ID, SOURCE_TOKEN).start()
    settings = base_config(tmp, sim.url, **config_overrides) if config is None \
        else config(sim.url)
    agent = AgentProcess(tmp, settings)
    try:
        agent.start()
        yield agent, sim
        agent.stop()
    finally:
        agent.kill()
        sim.stop()


def schedule_of(media: Sequence[dict[str, Any]],
                programs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "device_id": DEVICE_ID, "timezone": "Asia/Ho_Chi_Minh",
            "media": list(media), "programs": list(programs)}


def media_program(program_id: str, items: Sequence[str], start: str,
                  **extra: Any) -> dict[str, Any]:
    return {"id": program_id, "title": program_id, "priority": "scheduled",
            "source": {"type": "media", "items": list(items)}, "start": start, **extra}
