"""FM relay (tiếp sóng) end to end: the real agent process tunes the fake rtl_tcp server
(drivers/sdr/fake_rtl_tcp.py, a 1 kHz station on 100.0 MHz) over loopback, demodulates it
and plays it into the clocked WAV sink; scheduled ``fm`` programs, the ``fm_relay`` command
over a real Mosquitto, and the stream program's FM fallback (source-api.md, mqtt.md, hil.md).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.mixer.curve import effective_volume, volume_to_db
from tests.conftest import (
    DEVICE,
    AgentFactory,
    Source,
    capture_until,
    program,
    wait_ready,
    whole_second,
)
from tests.support.agentproc import AgentProcess, free_port, local_time, wait_for
from tests.support.fake_rtl_tcp import (
    FakeRtlTcpServer,
    FakeStation,
    expected_amplitude,
    measure_tone,
)
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import SILENCE, Capture, rms_dbfs, tone_frequency

# The fake SDR server makes IQ in real time with numpy: tests that use it share one
# worker, or on 2 cores they starve each other and the starved fake drops samples.
pytestmark = pytest.mark.xdist_group("sdr")

STATION = FakeStation(100.0e6, 1000.0)
POLL_S = 5.0  # the agent's schedule poll (the config's minimum)
MIN_LEFT_S = 1.5  # what must remain before the start once the agent is ready (pre-roll)
WINDOW_S = 0.1  # the WAV is judged in windows this long
TONE_MIN_DBFS = -20.0  # a window this loud at 1 kHz carries the station
START_WITHIN_S = 0.05  # pre-cued relay: its first sample at the program's start
END_WITHIN_S = 0.15  # the window's end is cut by the control loop's tick, then a 20 ms ramp
LEVEL_TOLERANCE_DB = 1.0
MIN_SNR_DB = 40.0
SQUELCH_DBFS = -30.0
WARMUP_S = 0.5
LONG_WINDOW_S = 60  # programs the test interrupts long before their end


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def fm_program(program_id: str, frequency_mhz: float, start: float, duration_s: float,
               **fields: Any) -> dict[str, Any]:
    return {**program(program_id, [], start, **fields),
            "source": {"type": "fm", "frequency_mhz": frequency_mhz}, "duration_s": duration_s}


def started_now() -> float:
    """A start one whole second in the past: an FM program joins its window at once."""
    return float(math.floor(time.time()) - 1)


@pytest.fixture
def fake() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer(stations=[STATION], port=0, seed=7) as server:
        yield server


def fm_config(port: int) -> dict[str, Any]:
    return {"source": {"poll_interval_s": POLL_S},
            "fm": {"backend": "rtl_tcp", "rtl_tcp": f"127.0.0.1:{port}",
                   "squelch_dbfs": SQUELCH_DBFS},
            "amplifier": {"warmup_s": WARMUP_S, "idle_off_s": 1.0}}


def start_agent(source: Source, agent_factory: AgentFactory, port: int,
                **overrides: Any) -> AgentProcess:
    """An agent relaying from the rtl_tcp server on ``port``, once it applied the schedule."""
    if source.version == 0:
        source.publish([])
    agent = agent_factory(**fm_config(port), **overrides)
    wait_ready(agent, source.version)
    return agent


def publish_soon(source: Source, agent: AgentProcess, start: float,
                 programs: list[dict[str, Any]], **extra: Any) -> None:
    """Publish ``programs`` starting at ``start`` (from :func:`next_start`) to a running
    agent; it polls every POLL_S, so the wait is independent of how slowly it started."""
    source.publish(programs, **extra)
    wait_ready(agent, source.version)
    left = start - time.time()
    assert left >= MIN_LEFT_S, f"setup too slow: only {left:.2f} s left before the start"


def next_start() -> float:
    return whole_second(POLL_S + MIN_LEFT_S + 1.0)


def carries_tone(capture: Capture, at: float) -> bool:
    """The window starting at wall time ``at`` holds the station's 1 kHz tone."""
    segment = capture.segment(at, WINDOW_S)
    return (segment.shape[0] > 0 and rms_dbfs(segment) > TONE_MIN_DBFS
            and abs(tone_frequency(segment, capture.rate) - STATION.tone_hz) < 20)


def is_silent(capture: Capture, start: float, seconds: float) -> bool:
    segment = capture.segment(start, seconds)
    return segment.shape[0] > 0 and int(abs(segment.astype(int)).max()) < SILENCE


def last_sound(capture: Capture, after: float) -> float:
    """Wall time of the last frame after ``after`` that is not silent."""
    begin = capture.index_at(after)
    loud = np.flatnonzero(abs(capture.samples[begin:].astype(int)).max(axis=1) >= SILENCE)
    assert loud.size, f"silent from {after:.3f} on"
    return capture.time_of(begin + int(loud[-1]))


def first_tone(capture: Capture, after: float, until: float) -> float | None:
    """Start of the first window after ``after`` that carries the tone."""
    at = after
    while at + WINDOW_S <= until:
        if carries_tone(capture, at):
            return at
        at += WINDOW_S
    return None


def first_silence(capture: Capture, after: float, until: float) -> float | None:
    at = after
    while at + WINDOW_S <= until:
        if is_silent(capture, at, WINDOW_S):
            return at
        at += WINDOW_S
    return None


def wait_fault(agent: AgentProcess, code: str, present: bool, timeout: float) -> float:
    """Seconds until ``code`` is (or is no longer) among the agent's faults."""
    began = time.monotonic()
    wait_for(lambda: (code in agent.fault_codes()) == present, timeout, 0.05,
             f"fault {code} {'raised' if present else 'cleared'} ({agent.fault_codes()})")
    return time.monotonic() - began


def wait_moment(find: Callable[[], float | None], timeout: float, what: str) -> float:
    """The wall time ``find`` locates in the growing capture, polling until it does."""
    found = wait_for(find, timeout, 0.2, what)
    assert found is not None
    return found


def wait_tone(agent: AgentProcess, after: float, timeout: float) -> float:
    """Wall time of the first window after ``after`` that carries the tone in the capture."""
    return wait_moment(lambda: first_tone(capture_until(agent, time.time()), after, time.time()),
                       timeout, f"the tone after {after:.1f}")


def play_reports_of(source: Source, program_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    def reports() -> list[dict[str, Any]]:
        return [r for r in source.play_reports() if r["program_id"] == program_id]
    found = wait_for(reports, timeout, 0.1, f"the play report of {program_id}")
    for report in found:
        validate("report", report)
    return found


def assert_relayed_station(capture: Capture, start: float, seconds: float,
                           volume: int) -> None:
    """The station's tone at its level through the gain curve, with a clean spectrum, in
    what the agent wrote (Capture.as_written: a stall of the machine that ran the card dry
    splatters the spectrum, and says nothing of the demodulator)."""
    measured = measure_tone(capture.as_written().segment(start, seconds).tobytes(),
                            STATION.tone_hz)
    expected_db = 20 * math.log10(expected_amplitude(STATION)) + volume_to_db(volume)
    print(f"relayed tone {20 * math.log10(measured.amplitude):.2f} dBFS peak "
          f"(expected {expected_db:.2f}), SNR {measured.snr_db:.1f} dB")
    assert 20 * math.log10(measured.amplitude) == pytest.approx(expected_db,
                                                                abs=LEVEL_TOLERANCE_DB)
    assert measured.snr_db >= MIN_SNR_DB


def test_fm_program_relays_the_station_for_its_window_with_status_and_report(
        source: Source, agent_factory: AgentFactory, fake: FakeRtlTcpServer) -> None:
    agent = start_agent(source, agent_factory, fake.port)
    start, duration_s, volume = next_start(), 4.0, 80
    publish_soon(source, agent, start, [fm_program("p-fm", 100.0, start, duration_s,
                                                   volume=volume)])
    end = start + duration_s

    time.sleep(max(0.0, start + 1.5 - time.time()))
    relaying = agent.status()
    assert relaying["fm"]["frequency_mhz"] == 100.0
    assert relaying["fm"]["signal_dbfs"] == pytest.approx(STATION.level_dbfs, abs=1.0)
    assert relaying["playing"]["source"] == "fm"
    assert relaying["playing"]["frequency_mhz"] == 100.0
    validate("status", relaying)

    capture = capture_until(agent, end + 1.5)
    first = capture.first_non_silent(SILENCE, after_epoch=start - 1.0)
    assert first is not None, "nothing was relayed"
    latency_s = capture.time_of(first) - start
    print(f"FM program start: first sample {latency_s * 1000:+.1f} ms from the start")
    assert 0 <= latency_s <= START_WITHIN_S
    assert all(carries_tone(capture, at) for at in
               (start + 0.1 + k * WINDOW_S for k in range(int((duration_s - 0.2) / WINDOW_S))))
    assert_relayed_station(capture, start + 0.5, duration_s - 1.0,
                           effective_volume(100, volume))
    tail_s = last_sound(capture, end - 0.5) - end
    print(f"FM program end: last sample {tail_s * 1000:+.1f} ms from the end of the window")
    assert -WINDOW_S <= tail_s <= END_WITHIN_S

    [report] = play_reports_of(source, "p-fm")
    assert {k: report[k] for k in ("source", "frequency_mhz", "priority", "outcome")} == {
        "source": "fm", "frequency_mhz": 100.0, "priority": "scheduled", "outcome": "completed"}
    assert epoch(report["started_at"]) == pytest.approx(start, abs=START_WITHIN_S)
    assert report["played_s"] == pytest.approx(duration_s, abs=0.1)
    assert wait_for(lambda: agent.status()["fm"] is None, 5, 0.1, "fm null after the window")


def test_tuned_off_the_station_the_relay_is_squelched_with_a_signal_lost_fault(
        source: Source, agent_factory: AgentFactory, fake: FakeRtlTcpServer) -> None:
    start = started_now()
    source.publish([fm_program("p-off", 101.0, start, LONG_WINDOW_S)])
    agent = start_agent(source, agent_factory, fake.port)
    joined = time.time()

    wait_fault(agent, "fm_signal_lost", True, 5)
    status = agent.status()
    assert status["fm"]["frequency_mhz"] == 101.0
    assert status["fm"]["signal_dbfs"] < SQUELCH_DBFS
    assert fake.state()["tuned_hz"] == [101_000_000]
    capture = capture_until(agent, time.time())
    assert is_silent(capture, joined, time.time() - 0.5 - joined), "noise was relayed"


def test_signal_dropped_mid_relay_raises_and_clears_signal_lost(
        source: Source, agent_factory: AgentFactory, fake: FakeRtlTcpServer) -> None:
    source.publish([fm_program("p-drop", 100.0, started_now(), LONG_WINDOW_S)])
    agent = start_agent(source, agent_factory, fake.port)
    wait_tone(agent, time.time(), 5)

    dropped = time.time()
    fake.drop_signal(True)
    raised_s = wait_fault(agent, "fm_signal_lost", True, 3)
    print(f"fm_signal_lost raised {raised_s:.2f} s after the drop")
    assert is_silent(capture_until(agent, dropped + 1.0), dropped + 0.5, 0.5), "noise relayed"

    returned = time.time()
    fake.drop_signal(False)
    cleared_s = wait_fault(agent, "fm_signal_lost", False, 3)
    back = wait_tone(agent, returned, 3) - returned
    print(f"fm_signal_lost cleared {cleared_s:.2f} s, tone back {back:.2f} s after the return")


def test_relay_recovers_from_a_stalled_and_a_disconnected_server(
        source: Source, agent_factory: AgentFactory, fake: FakeRtlTcpServer) -> None:
    source.publish([fm_program("p-stall", 100.0, started_now(), LONG_WINDOW_S)])
    agent = start_agent(source, agent_factory, fake.port)
    wait_tone(agent, time.time(), 5)

    stalled = time.time()
    fake.stall(True)
    wait_fault(agent, "sdr_stalled", True, 4)
    fake.stall(False)
    resumed = time.time()
    assert first_silence(capture_until(agent, resumed), stalled, resumed) is not None
    back = wait_tone(agent, resumed, 5) - resumed
    wait_fault(agent, "sdr_stalled", False, 2)
    print(f"stall: tone back {back:.2f} s after the server resumed")

    disconnected = time.time()
    fake.disconnect_clients()
    gap = wait_moment(lambda: first_silence(capture_until(agent, time.time()), disconnected,
                                            time.time()), 3, "the gap of the reconnection")
    back = wait_tone(agent, gap, 5) - disconnected
    print(f"disconnect: tone back {back:.2f} s after the server closed the connection")
    assert fake.state()["clients"] == 1


def test_fm_relay_command_over_mqtt_is_acked_relayed_and_reported(
        tmp_path: Path, source: Source, agent_factory: AgentFactory,
        fake: FakeRtlTcpServer) -> None:
    broker = Mosquitto.start(tmp_path / "mosquitto", {DEVICE: []})
    try:
        base = f"tt/devices/{DEVICE}"
        with broker.central(f"{base}/state", f"{base}/acks") as central:
            source.publish([])
            agent = start_agent(source, agent_factory, fake.port, mqtt={
                "brokers": [broker.uri], "username": DEVICE,
                "password": broker.passwords[DEVICE]})
            central.expect(f"{base}/state", predicate=lambda s: s.get("online") is True)
            command_id, duration_s = str(uuid.uuid4()), 3.0
            sent = time.time()
            central.publish(f"{base}/commands", json.dumps({
                "id": command_id, "type": "fm_relay",
                "args": {"frequency_mhz": 100.0, "duration_s": duration_s},
                "issued_at": datetime.now().astimezone().isoformat()}))

            def ack(status: str) -> dict[str, Any]:
                message: dict[str, Any] = central.expect(
                    f"{base}/acks", 10,
                    lambda a: a["command_id"] == command_id and a["status"] == status).json()
                validate("ack", message)
                return message
            ack("accepted")
            ack("completed")
            completed = time.time()
    finally:
        broker.stop()

    capture = capture_until(agent, completed)
    first = capture.first_non_silent(SILENCE, after_epoch=sent)
    assert first is not None, "nothing was relayed"
    began = capture.time_of(first)
    ended = last_sound(capture, began)
    # The window is duration_s from receipt; a live start waits for the amplifier's warm-up.
    print(f"fm_relay: first FM sample {(began - sent) * 1000:.0f} ms after the command was "
          f"sent (amplifier warm-up {WARMUP_S} s), last {ended - sent:.2f} s after it, "
          f"completed ack after {completed - sent:.2f} s")
    # The tuner is started, connected and its jitter buffer filled during the warm-up.
    assert began - sent < WARMUP_S + 0.5
    assert ended - sent == pytest.approx(duration_s, abs=0.3)
    assert completed - sent == pytest.approx(duration_s, abs=0.5)
    assert_relayed_station(capture, began + 0.2, ended - began - 0.4, 100)
    [report] = play_reports_of(source, f"cmd:{command_id}")
    assert {k: report[k] for k in ("source", "frequency_mhz", "priority", "outcome")} == {
        "source": "fm", "frequency_mhz": 100.0, "priority": "live", "outcome": "completed"}
    assert epoch(report["started_at"]) == pytest.approx(began, abs=START_WITHIN_S)
    assert report["played_s"] == pytest.approx(ended - began, abs=0.1)


def test_dead_stream_falls_back_to_the_fm_station_for_the_rest_of_its_window(
        source: Source, agent_factory: AgentFactory, fake: FakeRtlTcpServer) -> None:
    agent = start_agent(source, agent_factory, fake.port)
    start, duration_s = next_start(), 6.0
    dead_url = f"http://127.0.0.1:{free_port()}/live.mp3"
    publish_soon(source, agent, start, [
        {"id": "p-live", "title": "Phát trực tiếp huyện", "priority": "live",
         "source": {"type": "stream", "url": dead_url}, "start": local_time(start),
         "duration_s": duration_s}], fm_fallback={"frequency_mhz": 100.0})
    end = start + duration_s

    wait_fault(agent, "stream_unavailable", True, start + 3.0 - time.time())
    status = agent.status()
    assert status["fm"]["frequency_mhz"] == 100.0
    capture = capture_until(agent, end + 1.0)
    fallback = first_tone(capture, start - 0.5, end)
    assert fallback is not None, "the FM station was not relayed"
    print(f"fallback: FM tone {fallback - start:.2f} s after the stream program's start")
    assert all(carries_tone(capture, at) for at in
               (fallback + k * WINDOW_S for k in range(int((end - 0.2 - fallback) / WINDOW_S))))
    tail_s = last_sound(capture, end - 0.5) - end
    print(f"fallback end: last sample {tail_s * 1000:+.1f} ms from the end of the window")
    assert -WINDOW_S <= tail_s <= END_WITHIN_S


COMMUNE = FakeStation(60.0e6, 700.0)  # a commune wireless station (54-68 MHz band)
FIELD_SNR_DB = 20.0


@pytest.fixture
def two_bands() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer(stations=[STATION, COMMUNE], port=0, seed=11) as server:
        yield server


def relayed(capture: Capture, start: float, seconds: float, station: FakeStation) -> float:
    """SNR (dB) of ``station``'s tone over that span of what the agent wrote (as in
    assert_relayed_station)."""
    measured = measure_tone(capture.as_written().segment(start, seconds).tobytes(),
                            station.tone_hz)
    print(f"{station.frequency_hz / 1e6:g} MHz from {start:.1f}: tone "
          f"{20 * math.log10(max(measured.amplitude, 1e-9)):.1f} dBFS, SNR "
          f"{measured.snr_db:.1f} dB")
    return measured.snr_db


def test_adjacent_fm_programs_all_relay_and_report_truthfully(
        source: Source, agent_factory: AgentFactory, two_bands: FakeRtlTcpServer) -> None:
    """The first version's bug: the second of two back-to-back FM programs was silent (the
    first one's end stopped the tuner under it) and still reported completed. Three
    programs back to back: the second on the same station as the first (the lease goes
    on), the third on the commune band (a retune)."""
    agent = start_agent(source, agent_factory, two_bands.port)
    start, length = next_start(), 4.0
    stations = {"p-a": STATION, "p-b": STATION, "p-c": COMMUNE}
    publish_soon(source, agent, start, [
        fm_program(pid, station.frequency_hz / 1e6, start + n * length, length)
        for n, (pid, station) in enumerate(stations.items())])

    capture = capture_until(agent, start + len(stations) * length + 0.5)
    assert relayed(capture, start + 0.5, length - 1.0, STATION) >= FIELD_SNR_DB
    assert relayed(capture, start + length + 0.5, length - 1.0, STATION) >= FIELD_SNR_DB
    # A retune to another station takes a moment; judge the window past it.
    assert relayed(capture, start + 2 * length + 1.0, length - 1.5, COMMUNE) >= FIELD_SNR_DB
    reports = {r["program_id"]: r for pid in stations for r in play_reports_of(source, pid)}
    assert {pid: (r["outcome"], r["frequency_mhz"]) for pid, r in reports.items()} == {
        pid: ("completed", station.frequency_hz / 1e6) for pid, station in stations.items()}
    assert all(r["played_s"] >= length - 1.0 for r in reports.values()), reports
