"""Footprint of the real agent: memory and CPU idle and while playing an MP3, and memory
over many tracks in a row.

Memory and CPU are read from /proc for the agent's whole process tree (the agent and
its libvlc decoder workers); see bench/common.py for how short-lived workers are counted.

Run: ``.venv/bin/python -m bench.bench_footprint``
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.playout.engine import PERIOD_S, PlayoutEngine
from bench.common import (
    REPO,
    BenchRun,
    TreeSample,
    cpu_shares,
    fmt,
    make_mp3,
    make_tone_wav,
    markdown_table,
    media_program,
    overall_cpu_share,
    percentile,
    rss_kb,
    running_agent,
    sample_tree,
    schedule_of,
    scratch_dir,
    tree_memory,
)
from drivers.audio.wav import ClockedWavSink
from tests.support.agentproc import local_time
from tests.support.source_sim import add_media

MP3_S = 60
MP3_KBIT_S = 128
PLAY_AFTER_S = 20  # idle (nothing played yet) until then
PLAY_SAMPLE_FROM_S = 10  # into the MP3: steady state
PLAY_SAMPLE_S = 30
IDLE_SAMPLE_S = 10
TRACK_ITEMS = 10
TRACK_REPEAT = 100
TRACK_S = 0.05
TRACKS_DEADLINE_S = 270.0
CHECKPOINT_EVERY = 100
RATE = 48000


@dataclass(frozen=True)
class Phase:
    name: str
    samples: list[TreeSample]


def play_mp3_phases(tmp: Path) -> list[Phase]:
    mp3 = make_mp3(tmp / "noise.mp3", MP3_S, MP3_KBIT_S)
    media = add_media(tmp / "content", "m-mp3", mp3, duration_s=float(MP3_S))
    start = int(time.time()) + PLAY_AFTER_S
    schedule = schedule_of([media], [media_program("p-mp3", ["m-mp3"], local_time(start))])
    with running_agent(tmp, schedule) as (agent, _):
        assert agent.process is not None
        pid = agent.process.pid
        time.sleep(2)  # past the first sync
        idle = sample_tree(pid, start - 3 - time.time())
        time.sleep(max(0.0, start + PLAY_SAMPLE_FROM_S - time.time()))
        playing = sample_tree(pid, PLAY_SAMPLE_S)
        # the MP3 ends, then the amplifier's idle_off_s (2 s in base_config)
        time.sleep(max(0.0, start + MP3_S + 3 - time.time()))
        after = sample_tree(pid, IDLE_SAMPLE_S)
    return [Phase("idle, nothing played yet", idle),
            Phase(f"playing a {MP3_KBIT_S} kbit/s MP3", playing),
            Phase("idle after playing (one warm decoder worker)", after)]


def phase_rows(phases: Sequence[Phase]) -> list[list[str]]:
    rows = []
    for phase in phases:
        s = phase.samples
        agent = [x.memory.agent_rss_kb / 1024 for x in s]
        tree_rss = [x.memory.tree_rss_kb / 1024 for x in s]
        tree_pss = [x.memory.tree_pss_kb / 1024 for x in s]
        shares = cpu_shares(s)
        rows.append([
            phase.name, str(len(s)),
            f"{fmt(percentile(agent, 50))} / {fmt(max(agent))}",
            f"{fmt(percentile(tree_rss, 50))} / {fmt(max(tree_rss))}",
            f"{fmt(percentile(tree_pss, 50))} / {fmt(max(tree_pss))}",
            str(max(x.memory.processes for x in s)),
            f"{fmt(percentile(shares, 50), 2)} / {fmt(percentile(shares, 95), 2)}",
            fmt(overall_cpu_share(s), 2)])
    return rows


@dataclass(frozen=True)
class Checkpoint:
    tracks: int
    agent_rss_kb: int
    tree_pss_kb: int
    state_db_kb: int
    elapsed_s: float


def state_db_kb(state_dir: Path) -> int:
    """Size of the agent's SQLite database with its WAL: what its page cache can fill up
    to (SQLite's default cache is 2 MB per connection)."""
    return sum(p.stat().st_size for p in state_dir.glob("agent.db*")) // 1024


def many_tracks(tmp: Path) -> list[Checkpoint]:
    """RSS of the agent every CHECKPOINT_EVERY play reports, over one program of
    TRACK_ITEMS short items repeated TRACK_REPEAT times."""
    content = tmp / "content"
    media = [add_media(content, f"m-{i}", make_tone_wav(tmp / f"t{i}.wav", TRACK_S,
                                                        400 + 100 * i))
             for i in range(TRACK_ITEMS)]
    start = int(time.time()) + 8
    program = media_program("p-tracks", [m["id"] for m in media], local_time(start),
                            repeat=TRACK_REPEAT)
    checkpoints: list[Checkpoint] = []
    with running_agent(tmp, schedule_of(media, [program])) as (agent, sim):
        assert agent.process is not None
        pid = agent.process.pid
        time.sleep(max(0.0, start - time.time()))
        began = time.monotonic()
        checkpoints.append(Checkpoint(0, rss_kb(pid), tree_memory(pid).tree_pss_kb,
                                      state_db_kb(agent.state_dir), 0.0))
        total = TRACK_ITEMS * TRACK_REPEAT
        while checkpoints[-1].tracks < total and time.monotonic() - began < TRACKS_DEADLINE_S:
            time.sleep(0.25)
            played = sum(1 for r in sim.reports() if r["type"] == "play")
            if played >= checkpoints[-1].tracks + CHECKPOINT_EVERY or played >= total:
                checkpoints.append(Checkpoint(
                    played, rss_kb(pid), tree_memory(pid).tree_pss_kb,
                    state_db_kb(agent.state_dir), time.monotonic() - began))
    return checkpoints


def imports_only_rss_kb() -> int:
    """RSS of a Python process that has imported the daemon's modules and nothing else:
    the floor under the agent's own RSS."""
    probe = subprocess.run(
        [sys.executable, "-c", "import agent.service.daemon, pathlib; "
         "print(next(l.split()[1] for l "
         "in pathlib.Path('/proc/self/status').read_text().splitlines() "
         "if l.startswith('VmRSS:')))"],
        cwd=REPO, check=True, capture_output=True, text=True)
    return int(probe.stdout)


def in_process_idle_cpu(tmp: Path) -> tuple[float, float]:
    """% of one core used, with nothing to play, by the clocked WAV sink alone and by the
    playout engine feeding it silence, each in this process for IDLE_SAMPLE_S."""
    def busy(seconds: float) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(seconds)
        return 100 * (time.process_time() - cpu) / (time.monotonic() - wall)

    sink = ClockedWavSink(tmp / "sink-alone.wav", RATE)
    sink.open()
    try:
        sink_alone = busy(IDLE_SAMPLE_S)
    finally:
        sink.close()
    engine = PlayoutEngine(ClockedWavSink(tmp / "engine.wav", RATE), on_event=lambda _: None)
    engine.start()
    try:
        with_engine = busy(IDLE_SAMPLE_S)
    finally:
        engine.stop()
    return sink_alone, with_engine


def slope_kb_per_100(checkpoints: Sequence[Checkpoint]) -> float:
    """Least-squares slope of the agent's RSS against tracks played, in KB per 100."""
    tracks = np.array([c.tracks for c in checkpoints], dtype=np.float64)
    rss = np.array([c.agent_rss_kb for c in checkpoints], dtype=np.float64)
    return float(np.polyfit(tracks, rss, 1)[0] * 100)


def main() -> str:
    run = BenchRun("bench_footprint", "Footprint: memory and CPU")
    with scratch_dir("bench-footprint") as tmp:
        phases = play_mp3_phases(tmp)
    with scratch_dir("bench-tracks") as tmp:
        checkpoints = many_tracks(tmp)
    with scratch_dir("bench-idle") as tmp:
        sink_cpu, engine_cpu = in_process_idle_cpu(tmp)
    body = [
        "The real agent (clocked WAV sink, simulated amplifier, no MQTT, no FM) with one "
        f"program: a {MP3_S} s, {MP3_KBIT_S} kbit/s CBR MP3 of pink noise (lame), starting "
        f"{PLAY_AFTER_S} s after launch. Sampled every second from /proc: RSS of the agent "
        "process alone, RSS and PSS summed over its process tree (agent + libvlc decoder "
        "workers: the one decoding and the one kept warm). RSS counts pages shared between "
        "processes (Python, libvlc) once per process; PSS splits them, so the tree's PSS is "
        "what the tree costs the machine. CPU: utime+stime+cutime+cstime from "
        "/proc/<pid>/stat summed over the agent and its live descendants (a worker that exited "
        "and was reaped is in the agent's cutime/cstime, so short-lived workers are counted), "
        "differenced between samples and divided by wall time: % of one core, p50/p95 over "
        "the one-second intervals and over the whole window. The virtual sound card "
        "(`wav-dac` thread writing the WAV file) is part of the agent's CPU here; on a device "
        f"ALSA does that. Playing is sampled from {PLAY_SAMPLE_FROM_S} s into the MP3 for "
        f"{PLAY_SAMPLE_S} s.",
        "",
        markdown_table(["phase", "samples", "agent RSS MB p50 / max",
                        "tree RSS MB p50 / max", "tree PSS MB p50 / max", "processes",
                        "CPU % of one core p50 / p95", "CPU % overall"],
                       phase_rows(phases)),
        "",
        f"For scale: a Python process that has only imported `agent.service.daemon` (and so numpy, "
        f"requests, paho-mqtt, prometheus_client, cryptography, yaml) has an RSS of "
        f"{fmt(imports_only_rss_kb() / 1024)} MB.",
        "",
        "Where the idle CPU goes, measured in this process (time.process_time over "
        f"{IDLE_SAMPLE_S} s, nothing playing): the clocked WAV sink alone (the virtual "
        f"card, absent on a device) {fmt(sink_cpu, 2)} %; the playout engine rendering "
        f"silence into it every {PERIOD_S * 1000:.0f} ms, sink included, "
        f"{fmt(engine_cpu, 2)} % of one core.",
        "",
        "Targets: RSS while playing ≤ 60 MB, CPU while playing ≤ 5 % of one core.",
        "",
        "### Memory over many tracks",
        "",
        f"One program of {TRACK_ITEMS} WAV items of {TRACK_S * 1000:.0f} ms each (different "
        f"tones), `repeat: {TRACK_REPEAT}`: {TRACK_ITEMS * TRACK_REPEAT} tracks, each "
        "decoded by its own worker process. The agent's RSS is recorded each time the source "
        f"simulator has received another {CHECKPOINT_EVERY} play reports (deadline "
        f"{TRACKS_DEADLINE_S:.0f} s); the track rate is bounded by starting one libvlc worker "
        "per item, not by the items' length.",
        "",
        markdown_table(["tracks reported", "elapsed s", "agent RSS MB", "tree PSS MB",
                        "state DB + WAL KB"],
                       [[str(c.tracks), fmt(c.elapsed_s, 0), fmt(c.agent_rss_kb / 1024, 2),
                         fmt(c.tree_pss_kb / 1024, 1), str(c.state_db_kb)]
                        for c in checkpoints]),
        "",
    ]
    if len(checkpoints) >= 2:
        first, last = checkpoints[0], checkpoints[-1]
        body.append(
            f"Agent RSS {fmt(first.agent_rss_kb / 1024, 2)} MB at track {first.tracks}, "
            f"{fmt(last.agent_rss_kb / 1024, 2)} MB at track {last.tracks}; least-squares "
            f"slope {fmt(slope_kb_per_100(checkpoints), 1)} KB per 100 tracks.")
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
