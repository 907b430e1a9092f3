"""The deciding thread's turns (issue 9): how long one turn of the control loop takes
(facts applied, then the tick) while everything that used to block it happens, read from
the agent's own ``control_tick_seconds`` histogram.

The agent runs the shipped config/agent.yaml as a test box must change it
(tests/support/shipped.py), with FM on the fake rtl_tcp server (stations on 100.0 and
101.0 MHz) and commands signed over MQTT/TLS. For ``WORKLOAD_S`` a command comes every
``EVERY_S``, in turn: ``play_now`` of a text never spoken before (espeak-ng renders it),
``fm_relay`` on 100.0 then on 101.0 MHz (a retune each), ``play_now`` of a cached file (a
decoder worker taken, the last one killed and reaped) and ``emergency`` of a new text
(chime, then the speech). Each preempts the one before.

Run: ``.venv/bin/python -m bench.bench_control_tick``
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from agent.http.metrics import TICK_BUCKETS_S
from bench.common import BenchRun, fmt, markdown_table, scratch_dir
from tests.conftest import TOKEN, Source, wait_ready
from tests.support import media
from tests.support.agentproc import AgentProcess
from tests.support.central import Central
from tests.support.central_checks import DEVICE, KEY, mqtt_config
from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation
from tests.support.mosquitto import Mosquitto
from tests.support.shipped import test_box_config

WORKLOAD_S = 120.0
EVERY_S = 1.5
TARGET_P99_S = 0.005
Histogram = dict[float, float]  # upper bound (s) -> cumulative count


def tick_histogram(agent: AgentProcess) -> Histogram:
    text = requests.get(agent.health_url + "/metrics", timeout=5).text
    found: Histogram = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("control_tick_seconds_bucket"):
                found[float(sample.labels["le"])] = sample.value
    return found


def workload(central: Central, serial: int) -> list[dict[str, Any]]:
    text = f"Thông báo số {serial}: kính mời bà con đến họp tại nhà văn hoá thôn."
    return [central.command("play_now", {"text": text}),
            central.command("fm_relay", {"frequency_mhz": 100.0, "duration_s": 30}),
            central.command("fm_relay", {"frequency_mhz": 101.0, "duration_s": 30}),
            central.command("play_now", {"media_id": "m-tone"}),
            central.command("emergency", {"text": f"Khẩn cấp {serial}: {text}"})]


def measure(tmp: Path) -> tuple[Histogram, int]:
    source = Source(tmp / "source")
    source.start()
    broker = Mosquitto.start(tmp / "mosquitto", {DEVICE: []})
    home = tmp / "agent"
    home.mkdir()
    stations = [FakeStation(100.0e6, 1000.0), FakeStation(101.0e6, 700.0)]
    try:
        with FakeRtlTcpServer(stations, port=0) as fake:
            config = test_box_config(home, DEVICE, source.url, TOKEN, fm={
                "backend": "rtl_tcp", "rtl_tcp": f"127.0.0.1:{fake.port}"})
            config.update(mqtt_config(broker))
            agent = AgentProcess(home, config)
            try:
                source.add("m-tone", media.tone(tmp / "tone.wav", 550, 20.0))
                source.publish([])
                agent.start()
                wait_ready(agent, source.version, timeout=60)
                with Central(broker, DEVICE, KEY, tls=True) as central:
                    central.wait_online()
                    before = tick_histogram(agent)
                    sent, serial = 0, 0
                    end = time.monotonic() + WORKLOAD_S
                    while time.monotonic() < end:
                        serial += 1
                        for command in workload(central, serial):
                            central.send(command)
                            sent += 1
                            time.sleep(EVERY_S)
                    after = tick_histogram(agent)
            finally:
                agent.stop()
                agent.kill()
    finally:
        broker.stop()
        source.stop()
    return {le: after[le] - before.get(le, 0.0) for le in after}, sent


def quantile_bound(histogram: Histogram, q: float) -> float:
    """The smallest bucket bound under which at least ``q`` of the turns fell."""
    total = histogram[float("inf")]
    return next(le for le in sorted(histogram) if histogram[le] >= q * total)


def main() -> str:
    run = BenchRun("bench_control_tick", "Control loop turns while it renders, decodes and "
                                         "retunes")
    with scratch_dir("bench-control-tick") as tmp:
        histogram, sent = measure(tmp)
    total = histogram[float("inf")]
    rows, below = [], 0.0
    for bound in sorted(histogram):
        label = "more" if bound == float("inf") else f"≤ {1000 * bound:g} ms"
        rows.append([label, int(histogram[bound] - below)])
        below = histogram[bound]
    within = histogram[TARGET_P99_S] / total
    body = [
        "\n\n".join(__doc__.split("\n\n")[:2]).replace("\n", " "),
        "",
        markdown_table(["measure", "value"], [
            ["commands sent", sent],
            ["turns of the deciding thread", int(total)],
            ["p50 (bucket bound)", f"≤ {fmt(1000 * quantile_bound(histogram, 0.5), 1)} ms"],
            ["p99 (bucket bound)", f"≤ {fmt(1000 * quantile_bound(histogram, 0.99), 1)} ms"],
            [f"turns within {1000 * TARGET_P99_S:g} ms", f"{100 * within:.2f} %"]]),
        "",
        markdown_table(["turn took", "turns"], rows),
        "",
        f"Target: p99 ≤ {1000 * TARGET_P99_S:g} ms (buckets {TICK_BUCKETS_S}): "
        + ("met" if within >= 0.99 else "not met")
        + f", {int(total - histogram[TARGET_P99_S])} of {int(total)} turns took longer.",
    ]
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
