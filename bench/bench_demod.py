"""FM relay costs: WBFM demodulator throughput (multiple of real time, one core), CPU share of
a live relay through the fake rtl_tcp, and relay start latency (FmTuner.start -> first
non-silent PCM).

    .venv/bin/python -m bench.bench_demod [--runs 15] [--relay-seconds 10] [--starts 20]

The fake server runs in its own process so that only the agent side is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from agent.core.clock import SystemClock
from agent.core.faults import FaultRegistry
from agent.playout.fm_tuner import FmTuner
from bench.common import BenchRun, fmt, markdown_table, percentile
from drivers.sdr import receiver_factory
from drivers.sdr.wbfm import WbfmDemodulator, default_offset_hz
from tests.support.fake_rtl_tcp import NOISE_DBFS, FakeStation, IqGenerator, Tuning

STATION = FakeStation(100.0e6, 1000.0)
RATES = (240_000, 960_000, 2_048_000)
BLOCK_S = 0.02  # what the rtl_tcp receiver hands the demodulator
PERIOD_S = 0.01  # the playout engine reads 10 ms at a time


def station_iq(sample_rate: int, seconds: float) -> list[bytes]:
    noise_std = (10 ** (NOISE_DBFS / 10) / 2) ** 0.5
    rng = np.random.default_rng(1)
    noise = rng.normal(0, noise_std, (1 << 18, 2)).astype(np.float32).view(np.complex64).ravel()
    generator = IqGenerator([STATION], rng, noise)
    tuning = Tuning(frequency_hz=round(STATION.frequency_hz - default_offset_hz(sample_rate)),
                    sample_rate=sample_rate)
    count = int(sample_rate * BLOCK_S)
    return [generator.block(tuning, count, True) for _ in range(round(seconds / BLOCK_S))]


def throughput(sample_rate: int, runs: int) -> list[float]:
    """Multiples of real time demodulating 1 s of IQ in 20 ms blocks, one per run."""
    blocks = station_iq(sample_rate, 1.0)
    multiples = []
    for _ in range(runs):
        demodulator = WbfmDemodulator(sample_rate)
        started = time.process_time()
        for block in blocks:
            demodulator.process(block)
        multiples.append(1.0 / (time.process_time() - started))
    return multiples


@contextmanager
def fake_server_process() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_rtl_tcp", "--port", "0", "--station",
         f"{STATION.frequency_hz / 1e6}:{STATION.tone_hz}"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(json.loads(process.stdout.readline())["port"])
    finally:
        process.terminate()
        process.wait(timeout=5)


def make_tuner(port: int, sample_rate: int) -> FmTuner:
    return FmTuner(receiver_factory("rtl_tcp", rtl_tcp_address=f"127.0.0.1:{port}",
                                    sample_rate=sample_rate, gain_db=None, ppm=0),
                   FaultRegistry(time.time), SystemClock(), squelch_dbfs=-30.0)


def relay_cpu_share(port: int, sample_rate: int, seconds: float) -> float:
    """Process CPU time / wall time of a relay with an engine-like reader, in percent."""
    tuner = make_tuner(port, sample_rate)
    tuner.tune(STATION.frequency_hz / 1e6)
    stop = threading.Event()

    def engine() -> None:
        while not stop.wait(PERIOD_S):
            tuner.read(round(48_000 * PERIOD_S))

    reader = threading.Thread(target=engine, name="bench-engine")
    reader.start()
    time.sleep(1.0)  # connected and settled
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(seconds)
    share = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
    stop.set()
    reader.join()
    tuner.stop()
    return share


def start_latency(port: int, sample_rate: int) -> float:
    """Seconds from FmTuner.start to the first non-silent 10 ms read."""
    tuner = make_tuner(port, sample_rate)
    frames = round(48_000 * PERIOD_S)
    started = time.monotonic()
    tuner.tune(STATION.frequency_hz / 1e6)
    try:
        while time.monotonic() - started < 10:
            if tuner.read(frames) != bytes(frames * 4):
                return time.monotonic() - started
            time.sleep(PERIOD_S)
        raise RuntimeError("no audio within 10 s")
    finally:
        tuner.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--relay-seconds", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=20)
    args = parser.parse_args()
    run = BenchRun("bench_demod", "FM relay: demodulator throughput, relay CPU, start latency")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rows = []
    with fake_server_process() as port:
        for rate in RATES:
            multiples = throughput(rate, args.runs)
            share = relay_cpu_share(port, rate, args.relay_seconds)
            latencies = [start_latency(port, rate) for _ in range(args.starts)]
            rows.append([
                f"{rate / 1000:g} kS/s", f"{default_offset_hz(rate) / 1000:g} kHz",
                f"{fmt(percentile(multiples, 5), 0)} / {fmt(percentile(multiples, 50), 0)} / "
                f"{fmt(percentile(multiples, 95), 0)}",
                fmt(share), f"{fmt(1000 * percentile(latencies, 50), 0)} / "
                            f"{fmt(1000 * percentile(latencies, 99), 0)}"])
    body = (
        f"Demodulator: {args.runs} runs of 1 s of IQ (the fake's 1 kHz station) in 20 ms "
        f"blocks, process CPU time, pinned to one core. Relay: FmTuner through rtl_tcp to the "
        f"fake server (own process) with an engine-like reader (10 ms every 10 ms), "
        f"{args.relay_seconds:g} s. Start: {args.starts} starts, FmTuner.start to the first "
        "non-silent 10 ms read (includes the receiver's 100 ms settle discard and the 300 ms "
        "jitter-buffer prefill).\n\n"
        + markdown_table(["IQ rate", "station offset", "demod × real time p5 / p50 / p95",
                          "relay CPU % of one core", "start latency p50 / p99 ms"], rows))
    print(run.section(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
