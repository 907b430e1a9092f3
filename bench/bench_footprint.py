"""Footprint of the real agent with the shipped default config (config/agent.yaml, changed
only where a test box must: tests/support/shipped.py): memory and CPU idle, while playing
an MP3 and while relaying FM, FM off and FM as shipped reported apart; memory over many
tracks in a row; the time of ``broadcast-agent --help`` and ``validate``; what each library
the daemon imports costs in RSS.

Memory and CPU are read from /proc for the agent's whole process tree (the agent, the
playout process, the libvlc decoder workers); see bench/common.py for how
short-lived workers are counted.

Run: ``.venv/bin/python -m bench.bench_footprint``
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.playout.engine import PlayoutEngine
from agent.playout.host import CARD_BUFFER_S, PERIOD_S
from bench.common import (
    DEVICE_ID,
    REPO,
    SOURCE_TOKEN,
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
    thread_times,
    tree_memory,
)
from drivers.audio.wav import ClockedWavSink
from tests.support.agentproc import local_time
from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation
from tests.support.shipped import provisioned_copy, test_box_config
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
FM_AFTER_S = 15
FM_SAMPLE_FROM_S = 5  # into the relay: past its start
FM_SAMPLE_S = 20
FM_MHZ = 100.0
CLI_RUNS = 15
CARD_THREADS = ("wav-dac", "wav-disk")  # the clocked WAV sink's, in the playout process
ENGINE_THREAD = "playout"
FM_OFF = {"backend": "none"}
# Imported one after another in a fresh Python, then the daemon: each line is what that
# library adds (what it shares with one before it is counted there).
# drivers.sdr.rtl_fm: what FM as shipped adds when the daemon builds its tuner.
LIBRARIES = ("yaml", "sqlite3", "ssl", "hashlib", "asyncio", "requests", "paho.mqtt.client",
             "prometheus_client", "importlib.metadata", "agent.service.daemon",
             "drivers.sdr.rtl_fm")
# ... and what it imports only with other settings or later, imported after it: PyNaCl
# once a signing key is configured, numpy (fm_audio) at the first FM relay, the rtl_tcp
# client with that backend.
NOT_IMPORTED = ("nacl.signing", "drivers.sdr.fm_audio", "drivers.sdr.rtl_tcp")


@dataclass(frozen=True)
class Phase:
    name: str
    samples: list[TreeSample]
    card_cpu: float  # % of one core the virtual card's threads took meanwhile
    engine_runs: float  # times the engine's thread was put on a CPU, per period


def card_and_engine(pid: int) -> tuple[float, int]:
    """CPU seconds so far of the virtual card's threads in the tree of ``pid``, and the
    times so far its engine's thread was put on a CPU."""
    times = thread_times(pid, (*CARD_THREADS, ENGINE_THREAD))
    return sum(times[name].cpu_s for name in CARD_THREADS), times[ENGINE_THREAD].runs


def sampled_phase(name: str, pid: int, seconds: float) -> Phase:
    """The tree of ``pid`` sampled for ``seconds``, with what its virtual card took."""
    (card_before, runs_before), began = card_and_engine(pid), time.monotonic()
    samples = sample_tree(pid, seconds)
    card_after, runs_after = card_and_engine(pid)
    elapsed = time.monotonic() - began
    return Phase(name, samples, 100 * (card_after - card_before) / elapsed,
                 (runs_after - runs_before) * PERIOD_S / elapsed)


def shipped(tmp: Path, fm: dict[str, Any] | None) -> Callable[[str], dict[str, Any]]:
    return lambda source_url: test_box_config(tmp, DEVICE_ID, source_url, SOURCE_TOKEN, fm)


def play_mp3_phases(tmp: Path, fm: dict[str, Any] | None, label: str) -> list[Phase]:
    mp3 = make_mp3(tmp / "noise.mp3", MP3_S, MP3_KBIT_S)
    media = add_media(tmp / "content", "m-mp3", mp3, duration_s=float(MP3_S))
    start = int(time.time()) + PLAY_AFTER_S
    schedule = schedule_of([media], [media_program("p-mp3", ["m-mp3"], local_time(start))])
    with running_agent(tmp, schedule, config=shipped(tmp, fm)) as (agent, _):
        assert agent.process is not None
        pid = agent.process.pid
        time.sleep(2)  # past the first sync
        idle = sampled_phase(f"{label}: idle, nothing played yet", pid,
                             start - 3 - time.time())
        time.sleep(max(0.0, start + PLAY_SAMPLE_FROM_S - time.time()))
        playing = sampled_phase(f"{label}: playing a {MP3_KBIT_S} kbit/s MP3", pid,
                                PLAY_SAMPLE_S)
    return [idle, playing]


def fm_relay_phase(tmp: Path) -> Phase:
    """The shipped config with the rtl_tcp backend against the fake server (this process,
    not the agent's tree) relaying a scheduled FM program."""
    start = int(time.time()) + FM_AFTER_S
    program = {"id": "p-fm", "title": "p-fm", "priority": "scheduled",
               "source": {"type": "fm", "frequency_mhz": FM_MHZ}, "start": local_time(start),
               "duration_s": FM_SAMPLE_FROM_S + FM_SAMPLE_S + 5}
    with FakeRtlTcpServer([FakeStation(FM_MHZ * 1e6, 1000.0)]) as fake:
        fm = {"backend": "rtl_tcp", "rtl_tcp": f"127.0.0.1:{fake.port}"}
        with running_agent(tmp, schedule_of([], [program]), config=shipped(tmp, fm)) \
                as (agent, _):
            assert agent.process is not None
            time.sleep(max(0.0, start + FM_SAMPLE_FROM_S - time.time()))
            return sampled_phase("FM relaying (rtl_tcp)", agent.process.pid, FM_SAMPLE_S)


def cli_seconds(argv: Sequence[str]) -> list[float]:
    """Wall time of ``python -m agent <argv>`` (what the broadcast-agent script runs),
    CLI_RUNS runs after one warm-up."""
    times = []
    for _ in range(CLI_RUNS + 1):
        began = time.monotonic()
        subprocess.run([sys.executable, "-m", "agent", *argv], cwd=REPO, check=True,
                       capture_output=True)
        times.append(time.monotonic() - began)
    return times[1:]


def library_rss_kb() -> list[tuple[str, int]]:
    """RSS that each of LIBRARIES, then NOT_IMPORTED, adds, imported in that order in a
    fresh Python (the first entry is Python itself)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib, sys\n"
         "from agent.service.lean_imports import without_charset_detection\n"
         "without_charset_detection()  # as the daemon does\n"
         "def rss():\n"
         "    return int(open('/proc/self/statm').read().split()[1]) * 4\n"
         "print('python', rss())\n"
         "for name in sys.argv[1:]:\n"
         "    before = rss()\n"
         "    importlib.import_module(name)\n"
         "    print(name, rss() - before)\n", *LIBRARIES, *NOT_IMPORTED],
        cwd=REPO, check=True, capture_output=True, text=True)
    return [(name, int(kb)) for name, kb in (line.split() for line in probe.stdout.splitlines())]


def phase_rows(phases: Sequence[Phase]) -> list[list[str]]:
    rows = []
    for phase in phases:
        s = phase.samples
        agent = [x.memory.agent_rss_kb / 1024 for x in s]
        tree_rss = [x.memory.tree_rss_kb / 1024 for x in s]
        tree_pss = [x.memory.tree_pss_kb / 1024 for x in s]
        shares = cpu_shares(s)
        overall = overall_cpu_share(s)
        rows.append([
            phase.name, str(len(s)),
            f"{fmt(percentile(agent, 50))} / {fmt(max(agent))}",
            f"{fmt(percentile(tree_rss, 50))} / {fmt(max(tree_rss))}",
            f"{fmt(percentile(tree_pss, 50))} / {fmt(max(tree_pss))}",
            str(max(x.memory.processes for x in s)),
            f"{fmt(percentile(shares, 50), 2)} / {fmt(percentile(shares, 95), 2)}",
            fmt(overall, 2), fmt(phase.card_cpu, 2), fmt(overall - phase.card_cpu, 2),
            fmt(phase.engine_runs, 2)])
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


def in_process_idle_cpu(tmp: Path) -> tuple[float, float]:
    """% of one core used, with nothing to play, by the clocked WAV sink alone and by the
    playout engine feeding it silence as the playout process runs it (agent.playout.host),
    each in this process for IDLE_SAMPLE_S."""
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
    engine = PlayoutEngine(ClockedWavSink(tmp / "engine.wav", RATE), on_event=lambda _: None,
                           buffer_s=CARD_BUFFER_S, period_s=PERIOD_S)
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
    run = BenchRun("bench_footprint", "Footprint: memory and CPU with the default config")
    with scratch_dir("bench-cli") as tmp:
        config = provisioned_copy(tmp)
        help_s = cli_seconds(["--help"])
        validate_s = cli_seconds(["validate", "--config", str(config)])
    libraries = library_rss_kb()
    phases: list[Phase] = []
    with scratch_dir("bench-footprint-off") as tmp:
        phases += play_mp3_phases(tmp, FM_OFF, "FM off")
    with scratch_dir("bench-footprint-shipped") as tmp:
        phases += play_mp3_phases(tmp, None, "FM as shipped (rtl_fm), idle")
    with scratch_dir("bench-footprint-fm") as tmp:
        phases.append(fm_relay_phase(tmp))
    with scratch_dir("bench-tracks") as tmp:
        checkpoints = many_tracks(tmp)
    with scratch_dir("bench-idle") as tmp:
        sink_cpu, engine_cpu = in_process_idle_cpu(tmp)
    python_kb = libraries[0][1]
    imported, not_imported = libraries[:-len(NOT_IMPORTED)], libraries[-len(NOT_IMPORTED):]
    body = [
        "The real agent with the shipped `config/agent.yaml`, changed only where a test box "
        "must (tests/support/shipped.py): its folders in a scratch directory, the source "
        "simulator, MQTT off (no broker), the clocked WAV sink instead of `alsa:default`, the "
        "simulated amplifier instead of the GPIO relay, the clock trusted. FM is reported "
        "three ways: off (`fm.backend: none`), as shipped (`rtl_fm`, configured but not "
        "relaying: no program asks for it), and relaying a scheduled FM program through "
        "`rtl_tcp` from the fake server (it runs in the benchmark's process, outside the "
        "agent's tree). The MP3 is a "
        f"{MP3_S} s, {MP3_KBIT_S} kbit/s CBR MP3 of pink noise (lame), starting "
        f"{PLAY_AFTER_S} s after launch, sampled from {PLAY_SAMPLE_FROM_S} s into it for "
        f"{PLAY_SAMPLE_S} s; the relay is sampled from {FM_SAMPLE_FROM_S} s after its start "
        f"for {FM_SAMPLE_S} s.",
        "",
        "Sampled every second from /proc: RSS of the agent process alone, RSS and PSS summed "
        "over its process tree (agent, the playout process with the engine and the sound card, "
        "the recorder process, libvlc decoder workers: the one decoding and the one kept warm; "
        "rtl_fm when relaying with that backend). RSS counts pages shared between processes "
        "once per process; PSS splits them, so the tree's PSS is what the tree costs the "
        "machine. CPU: utime+stime+cutime+cstime summed over the agent and its live "
        "descendants, differenced between samples and divided by wall time: % of one core, "
        "p50/p95 over the one-second intervals and over the whole window. The virtual sound "
        "card (the clocked WAV sink's `wav-dac` and `wav-disk` threads, on a device ALSA's "
        "and the kernel's work) runs in the playout process; its threads are measured in "
        "place over the same window (their schedstat, found by the names the agent gives its "
        "threads, drivers/thread.py), and the column after it takes that off. The card's "
        "writes, made by the engine's own thread, stay in. Engine runs per period: the "
        f"times the engine's thread was put on a CPU (schedstat), per {PERIOD_S * 1000:.0f} "
        "ms period; 1 is a wake-up for each period it renders and nothing more.",
        "",
        markdown_table(["phase", "samples", "agent RSS MB p50 / max",
                        "tree RSS MB p50 / max", "tree PSS MB p50 / max", "processes",
                        "CPU % of one core p50 / p95", "CPU % overall",
                        "virtual card CPU %", "CPU % overall, virtual card excluded",
                        "engine runs per period"],
                       phase_rows(phases)),
        "",
        "Targets (issue 10): agent RSS ≤ 45 MB while playing an MP3, tree CPU ≤ 4 % of one "
        "core with the virtual card excluded.",
        "",
        "Where the idle CPU goes, measured in this process (time.process_time over "
        f"{IDLE_SAMPLE_S} s, nothing playing): the clocked WAV sink alone (the virtual "
        f"card, absent on a device) {fmt(sink_cpu, 2)} %; the playout engine rendering "
        f"silence into it every {PERIOD_S * 1000:.0f} ms, sink included, "
        f"{fmt(engine_cpu, 2)} % of one core.",
        "",
        "### What the daemon's imports cost",
        "",
        f"RSS a fresh Python ({fmt(python_kb / 1024)} MB after start-up) gains importing each "
        "of these in turn, then the daemon's own modules (`agent.service.daemon`, which "
        "pulls in what is not listed); a library's share of something an earlier one "
        "already loaded is counted with the earlier one. The total is the floor under the "
        "agent's RSS before it runs anything; `drivers.sdr.rtl_fm` is what FM as shipped "
        "adds when the daemon builds its tuner. numpy is not among them: the mixing runs in "
        "the playout process, the recorder in the recorder process. Below the total, "
        "imported after it, what the daemon imports only with other settings or later: "
        "libsodium's Ed25519 (PyNaCl, once a signing key is configured), "
        "`drivers.sdr.fm_audio` (numpy: the rtl_fm de-emphasis, imported by the first FM "
        "relay and kept from then on) and `drivers.sdr.rtl_tcp` (`fm.backend: rtl_tcp`; its "
        "demodulator's numpy comes with the first relay too).",
        "",
        markdown_table(["import", "RSS added MB"],
                       [[f"`{name}`", fmt(kb / 1024)] for name, kb in imported[1:]]
                       + [["total (Python included)",
                           fmt(sum(kb for _, kb in imported) / 1024)]]
                       + [[f"with other settings: `{name}`", fmt(kb / 1024)]
                          for name, kb in not_imported]),
        "",
        "### Command line",
        "",
        f"`python -m agent` (what the `broadcast-agent` script runs), {CLI_RUNS} runs after "
        "one warm-up, wall time from start to exit; `validate` checks the shipped config "
        "with its secret files beside it. Target ≤ 0.3 s.",
        "",
        markdown_table(["command", "p50 s", "p90 s", "max s"],
                       [[f"`broadcast-agent {label}`", fmt(percentile(times, 50), 3),
                         fmt(percentile(times, 90), 3), fmt(max(times), 3)]
                        for label, times in (("--help", help_s),
                                             ("validate --config agent.yaml", validate_s))]),
        "",
        "### Memory over many tracks",
        "",
        f"One program of {TRACK_ITEMS} WAV items of {TRACK_S * 1000:.0f} ms each (different "
        f"tones), `repeat: {TRACK_REPEAT}`: {TRACK_ITEMS * TRACK_REPEAT} tracks, each "
        "decoded by its own worker process, with the tests' base config (FM off). The "
        "agent's RSS is recorded each time the source "
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
