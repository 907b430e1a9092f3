"""Dropouts under load (issue 10): a tone programme plays for ``LOAD_MINUTES`` minutes while
the load of tests/e2e/test_load.py runs the whole time: CPU hogs on every core at normal
priority, a 1,500-program schedule republished every poll, a burst of 500 signed commands
(100 ``sync_now``) every minute, and a new 48 MB download every two minutes, cut halfway
at every request and resumed (each resume rehashes the part kept).

The agent runs the shipped config/agent.yaml as a test box must change it
(tests/support/shipped.py), on a broker for the commands, with two changes that make the
load: the schedule is polled every 5 s (60 s as shipped) and a cut download is resumed
after at most 2 s (600 s as shipped).

Counted: 5 ms windows of the tone that went silent on the clocked WAV sink, runs of 1 ms
or more of exact digital zero inside it (the card's padding of an underrun: a gap shorter
than a window), and the agent's own ``card_underrun_seconds``, before the tone and during
it. Sampled every second: ``playout_buffered_seconds``,
the tone's PCM waiting in its pipe to the playout process (the ring between decoder and
card): how much of the margin a stall of the agent ate; and, to tell whose stall a gap
was, the time the engine and the virtual card's DAC thread waited for a CPU, and the
hypervisor's steal (on a virtual machine every thread stalls then, whatever its priority),
and how late a real-time thread of the benchmark's own, outside the agent, woke
(tests/support/wake_probe.py, every 5 ms): a gap it shares is the machine's.

Run: ``.venv/bin/python -m bench.bench_load`` (``BENCH_LOAD_MINUTES`` to shorten it)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from agent.playout.host import MIN_LEAD_S
from bench.common import (
    BenchRun,
    fmt,
    markdown_table,
    percentile,
    scratch_dir,
    steal_s,
    thread_times,
)
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
    REPUBLISH_S,
    CpuHogs,
    Republisher,
    big_schedule,
    command_burst,
    silent_windows,
    zero_runs,
)
from tests.support.mosquitto import Mosquitto
from tests.support.shipped import test_box_config
from tests.support.wake_probe import WakeProbe

LOAD_MINUTES = float(os.environ.get("BENCH_LOAD_MINUTES", "10"))
BURST_EVERY_S = 60.0
DOWNLOAD_EVERY_S = 120.0
DOWNLOAD_BYTES = 48 * 1024 * 1024
RESUME_BACKOFF_S = 2
BUFFERED_BINS_S = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0)
CARD_RATE = 48_000  # audio.rate, as shipped (its default)
GAP_MIN_FRAMES = CARD_RATE // 1000  # 1 ms
PROBE_SLEEP_S = 0.005  # a wake costs the probe's thread some 85 us: 1.7 % of a core


@dataclass(frozen=True)
class Second:
    """What the second before ``at`` (wall time) held of the stalls that make a gap."""
    at: float
    steal_s: float  # the hypervisor's, all CPUs
    engine_waited_s: float  # the playout engine's thread, runnable but off a CPU
    dac_waited_s: float  # the virtual card's DAC thread, the same


class StallSampler:
    """Samples a :class:`Second` at each call, from the playout process's threads."""

    def __init__(self, agent_pid: int) -> None:
        self._pid = agent_pid
        self._last = self._read()
        self.seconds: list[Second] = []

    def _read(self) -> tuple[float, float, float]:
        times = thread_times(self._pid, ("playout", "wav-dac"))
        return steal_s(), times["playout"].waited_s, times["wav-dac"].waited_s

    def sample(self) -> None:
        now = self._read()
        steal, engine, dac = (b - a for a, b in zip(self._last, now, strict=True))
        self.seconds.append(Second(time.time(), steal, engine, dac))
        self._last = now

    def around(self, wall: float) -> Second | None:
        """The sample of the second that held ``wall``."""
        return next((second for second in self.seconds if second.at >= wall), None)


@dataclass
class LoadRun:
    silent: list[float]  # wall times of the silent 5 ms windows
    start: float  # wall time of the tone's first frame
    gaps: list[tuple[float, int]]  # (wall time, frames) of the digital-zero runs in the tone
    underrun_before_s: float  # card_underrun_seconds within a second of the tone's start
    underrun_s: float  # card_underrun_seconds at the end
    buffered_s: list[float]  # playout_buffered_seconds, once a second
    stalls: StallSampler  # once a second, during the tone
    probe: WakeProbe  # the benchmark's own real-time thread, during the tone
    bursts: int
    downloads: int
    schedules: int


def under_load(tmp: Path, tone_s: float) -> LoadRun:
    source = Source(tmp / "source")
    source.start()
    broker = Mosquitto.start(tmp / "mosquitto", {DEVICE: []})
    home = tmp / "agent"
    home.mkdir()
    config = test_box_config(home, DEVICE, source.url, TOKEN)
    config["source"].update(poll_interval_s=REPUBLISH_S, max_backoff_s=RESUME_BACKOFF_S)
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
        buffered: list[float] = []
        underrun_before_s: float | None = None
        with Central(broker, DEVICE, KEY, tls=True) as central, CpuHogs(), \
                Republisher(lambda: source.publish(programs)) as republisher, \
                WakeProbe(PROBE_SLEEP_S) as probe:
            central.wait_online()
            assert agent.process is not None
            stalls = StallSampler(agent.process.pid)
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
                if underrun_before_s is None and time.time() >= start - 0.5:
                    underrun_before_s = metric(agent, "card_underrun_seconds") or 0.0
                level = metric(agent, "playout_buffered_seconds")
                # Not in the tone's last seconds: its whole end is then in the pipe, which
                # drains as it should.
                steady = start + 1 < time.time() < start + tone_s - BUFFERED_BINS_S[-1]
                if level is not None and steady and not math.isnan(level):
                    buffered.append(level)
                time.sleep(1.0)
                stalls.sample()
            capture = capture_until(agent, start + tone_s)
            underrun_s = metric(agent, "card_underrun_seconds") or 0.0
        silent = silent_windows(capture, start + 0.01, tone_s - 0.02)
        gaps = zero_runs(capture, start + 0.01, tone_s - 0.02, GAP_MIN_FRAMES)
        return LoadRun(silent, start, gaps, underrun_before_s or 0.0, underrun_s, buffered,
                       stalls, probe, bursts, downloads, republisher.published)
    finally:
        agent.stop()
        agent.kill()
        broker.stop()
        source.stop()


def stall_rows(seconds: list[Second]) -> list[list[object]]:
    def ms(values: list[float]) -> str:
        return " / ".join(fmt(1000 * v, 1) for v in (percentile(values, 99), max(values)))
    return [
        ["hypervisor steal in the tone, all CPUs: total s / seconds with any",
         f"{fmt(sum(s.steal_s for s in seconds), 2)} / {sum(s.steal_s > 0 for s in seconds)}"],
        ["waits for a CPU per second, p99 / max ms: the engine's thread",
         ms([s.engine_waited_s for s in seconds])],
        ["… the virtual card's DAC thread", ms([s.dac_waited_s for s in seconds])]]


def probe_row(probe: WakeProbe) -> list[object]:
    ms = [1000 * v for v in probe.late_s]
    policy = "" if probe.realtime else " (not permitted SCHED_FIFO: normal priority)"
    return [f"the benchmark's real-time thread, outside the agent{policy}: late p99 / max "
            f"ms, wakes later than {MIN_LEAD_S * 1000:.0f} ms",
            f"{fmt(percentile(ms, 99), 2)} / {fmt(max(ms), 1)}, {len(probe.stalls)}"]


def stalled(second: Second | None, probe: WakeProbe, wall: float) -> str:
    if second is None:
        return ""
    return (f" (that second: steal {second.steal_s * 1000:.0f} ms, the engine waited "
            f"{second.engine_waited_s * 1000:.1f} ms, the DAC "
            f"{second.dac_waited_s * 1000:.1f} ms; within 1 s of it the benchmark's own "
            f"real-time thread woke up to {probe.worst_near(wall) * 1000:.1f} ms late)")


def main() -> str:
    run = BenchRun("bench_load", f"Dropouts under load ({LOAD_MINUTES:g} min)")
    tone_s = LOAD_MINUTES * 60
    with scratch_dir("bench-load") as tmp:
        measured = under_load(tmp, tone_s)
    windows = round(tone_s / 0.005)
    levels = measured.buffered_s
    rows: list[list[object]] = [
        ["silent 5 ms windows in the tone", f"{len(measured.silent)} of {windows}"],
        ["gaps of ≥ 1 ms of digital zero in the tone", len(measured.gaps)],
        ["card_underrun_seconds (the agent's own count): before the tone / at the end",
         f"{fmt(measured.underrun_before_s, 4)} / {fmt(measured.underrun_s, 4)}"],
        ["playout_buffered_seconds min / p1 / p50 / p99",
         " / ".join(fmt(v, 2) for v in (min(levels), *(percentile(levels, q)
                                                          for q in (1, 50, 99))))],
        *stall_rows(measured.stalls.seconds),
        probe_row(measured.probe),
        ["schedules republished (1,500 programs each)", measured.schedules],
        ["command bursts (500 signed commands, 100 sync_now)", measured.bursts],
        ["48 MB downloads, cut halfway at every request", measured.downloads]]
    histogram = [[f"{low:g}-{high:g} s", sum(low <= v < high for v in levels)]
                 for low, high in pairwise(BUFFERED_BINS_S)]
    silent = measured.silent
    first = ", ".join(f"{t - silent[0]:.3f}" for t in silent[:10]) if silent else "none"
    gaps = ", ".join(f"{frames * 1000 / CARD_RATE:.1f} ms at {t - measured.start:.3f} s"
                     f"{stalled(measured.stalls.around(t), measured.probe, t)}"
                     for t, frames in measured.gaps[:10]) if measured.gaps else "none"
    in_tone_s = measured.underrun_s - measured.underrun_before_s
    body = [
        "\n\n".join(__doc__.split("\n\n")[:3]).replace("\n", " "),
        "",
        markdown_table(["measure", "value"], rows),
        "",
        f"Fill level of the ring (the tone's pipe to the playout process), {len(levels)} "
        "samples, one a second:",
        "",
        markdown_table(["PCM buffered ahead of the card", "samples"], histogram),
        "",
        f"Target: 0 dropouts. Silent windows (s after the first): {first}. Gaps in the "
        f"tone (its start is 0 s): {gaps}. Underrun the card counted during the tone: "
        + ("none." if in_tone_s == 0 else
           f"{in_tone_s * 1000:.1f} ms, a dropout even where no whole 5 ms window went "
           "silent.")
        + (f" Before the tone, while the card played the idle agent's silence: "
           f"{measured.underrun_before_s * 1000:.1f} ms (silent either way, but late)."
           if measured.underrun_before_s else ""),
    ]
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
