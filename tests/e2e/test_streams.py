"""Live streams end to end: the real agent relays a paced MP3 stream served on loopback
(tests/support/streams.py); when the stream dies (killed, stalled, or sending silence) it
raises ``stream_unavailable`` within ``dead_air_s`` and relays the schedule's FM fallback
from the fake rtl_tcp dongle, then switches back when the stream returns. A dead stream with
no tuner, and one silent from its start, are control logic: tests/simulation/test_relays.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TZ, AgentFactory, Source, capture_until, wait_ready, whole_second
from tests.support.agentproc import AgentProcess, local_time, wait_for
from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation
from tests.support.streams import PacedStream
from tests.support.wavfile import Capture, rms_dbfs, tone_frequency

# The fake SDR server makes IQ in real time with numpy: tests that use it share one
# worker, or on 2 cores they starve each other and the starved fake drops samples.
pytestmark = pytest.mark.xdist_group("sdr")

DEAD_AIR_S = 2.0
# How long a test waits for the raise; when it came is judged against when the air went
# quiet (the decoder may still hold buffered audio after the stream breaks).
RAISE_WAIT_S = DEAD_AIR_S + 8
STREAM_HZ = 440.0
FM_HZ = 1000.0
FM_MHZ = 100.0
LEAD_S = 8.0
RETURN_WITHIN_S = 8.0  # the agent probes a dead stream every 5 s; it starts within ~1 s
DEAD_AIR_LEVEL = round(32768 * 10 ** (-50 / 20))  # audio.dead_air_dbfs default


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[PacedStream]:
    with PacedStream.tone(tmp_path / "stream", STREAM_HZ) as server:
        yield server


@pytest.fixture
def dongle() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer([FakeStation(FM_MHZ * 1e6, FM_HZ)], seed=1) as fake:
        yield fake


def stream_program(url: str, start: float, duration_s: float = 120) -> dict[str, Any]:
    return {"id": "p-live", "title": "Phát trực tiếp huyện", "priority": "live",
            "source": {"type": "stream", "url": url}, "start": local_time(start, TZ),
            "duration_s": duration_s}


def start_on_stream(source: Source, agent_factory: AgentFactory, stream: PacedStream,
                    dongle: FakeRtlTcpServer) -> tuple[AgentProcess, float]:
    start = whole_second(LEAD_S)
    source.publish([stream_program(stream.url, start)],
                   fm_fallback={"frequency_mhz": FM_MHZ})
    fm = {"backend": "rtl_tcp", "rtl_tcp": f"127.0.0.1:{dongle.port}"}
    agent = agent_factory(audio={"dead_air_s": DEAD_AIR_S, "stream_caching_ms": 300},
                          amplifier={"warmup_s": 0.2, "idle_off_s": 30}, fm=fm)
    wait_ready(agent, source.version)
    wait_for(lambda: source_on_air(agent) == "stream", max(start - time.time(), 0) + 5, 0.1,
             f"the stream on air ({agent.log_tail(10)})")
    on_air = datetime.fromisoformat(agent.status()["playing"]["started_at"]).timestamp()
    return agent, on_air


def source_on_air(agent: AgentProcess) -> str | None:
    playing = agent.status()["playing"]
    return None if playing is None else str(playing["source"])


def fault_since(agent: AgentProcess, code: str) -> float | None:
    for fault in agent.status()["faults"]:
        if fault["code"] == code:
            return datetime.fromisoformat(fault["since"]).timestamp()
    return None


def tone_at(capture: Capture, start: float, seconds: float) -> tuple[float, float]:
    """(frequency of the strongest peak, RMS dBFS) of what left the card."""
    segment = capture.segment(start, seconds)
    return tone_frequency(segment, capture.rate), rms_dbfs(segment)


def last_sound(capture: Capture, after: float, before: float) -> float:
    """Wall time at which the last frame louder than the dead-air threshold left the card."""
    begin, end = capture.index_at(after), capture.index_at(before)
    loud = np.flatnonzero(np.abs(capture.samples[begin:end].astype(np.int32)).max(axis=1)
                          >= DEAD_AIR_LEVEL)
    assert loud.size, "no sound before the stream broke"
    return capture.time_of(begin + int(loud[-1]) + 1)


def assert_stream_audio(agent: AgentProcess, start: float, seconds: float = 1.0) -> None:
    capture = capture_until(agent, start + seconds)
    frequency, level = tone_at(capture, start, seconds)
    assert abs(frequency - STREAM_HZ) < 5 and level > -30, (frequency, level)


def fail_and_recover(agent: AgentProcess, stream: PacedStream, break_stream: str) -> None:
    time.sleep(1.2)
    assert_stream_audio(agent, time.time() - 1.0)
    broken_at = time.time()
    getattr(stream, break_stream)()
    raised = wait_for(lambda: fault_since(agent, "stream_unavailable"), RAISE_WAIT_S, 0.05,
                      "stream_unavailable")
    assert raised is not None
    # up to just before the raise: the fallback starts sounding at once
    quiet_from = last_sound(capture_until(agent, raised), broken_at - 1.0, raised - 0.1)
    # A stream that ends is dead at once; one that goes quiet after dead_air_s of quiet.
    wait_s = 0.0 if break_stream == "kill" else DEAD_AIR_S
    assert wait_s - 0.1 <= raised - quiet_from <= wait_s + 1.0, \
        f"raised {raised - quiet_from:.2f} s after the air went quiet"
    playing = agent.status()["playing"]
    assert (playing["program_id"], playing["priority"]) == ("p-live", "live")
    assert playing["source"] == "fm" and playing["frequency_mhz"] == FM_MHZ
    capture = capture_until(agent, time.time() + 1.5)
    frequency, level = tone_at(capture, time.time() - 1.0, 1.0)
    assert abs(frequency - FM_HZ) < 5 and level > -40, (frequency, level, {
        k: v for k, v in agent.status().items() if k in ("playing", "fm", "faults")})

    stream.resume()
    resumed_at = time.time()
    wait_for(lambda: fault_since(agent, "stream_unavailable") is None, RETURN_WITHIN_S, 0.1,
             "stream_unavailable cleared")
    back = time.time()
    assert source_on_air(agent) == "stream"
    assert back - resumed_at <= RETURN_WITHIN_S
    assert_stream_audio(agent, back + 0.5)


BREAKS = ("kill", "stall", "silence")


def test_dead_stream_falls_back_to_fm_and_returns(
        source: Source, agent_factory: AgentFactory, stream: PacedStream,
        dongle: FakeRtlTcpServer) -> None:
    """The stream breaks three ways in turn (it ends, it stalls, it goes silent), each
    after the agent came back to it from the break before; each time the FM fallback takes
    over, the stream returns, and the fallback's play is reported."""
    agent, _ = start_on_stream(source, agent_factory, stream, dongle)
    for break_stream in BREAKS:
        try:
            fail_and_recover(agent, stream, break_stream)
        except AssertionError as exc:
            raise AssertionError(f"the stream broken by {break_stream}: {exc}") from exc

    def fallbacks() -> list[dict[str, Any]]:
        fm = [r for r in source.play_reports() if r["source"] == "fm"]
        return fm if sum(r["outcome"] == "completed" for r in fm) >= len(BREAKS) else []
    reports = wait_for(fallbacks, 10, 0.1, "a completed fallback play report per break")
    assert {(r["program_id"], r["priority"], r["frequency_mhz"]) for r in reports} == \
        {("p-live", "live", FM_MHZ)}
    # One fallback per break, none at the start: a stream pre-rolled ahead of its start,
    # whose first read was the encoder's leading silence, was once called dead at it.
    assert [r["outcome"] for r in reports] == ["completed"] * len(BREAKS)
