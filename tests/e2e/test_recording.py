"""Off-air recording end to end, on the real agent with the clocked WAV sink: what
GET /recordings serves is what left the card (RMS envelope and timing), upload_recording
delivers that span to the source through a real Mosquitto, and SIGKILLs during recording
leave a store where every segment decodes, and a recorder process that dies is a fault
until it records again."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import requests
import soundfile as sf

from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, child_process, wait_for
from tests.support.central_checks import CheckedCentral, epoch, start_online
from tests.support.mosquitto import Mosquitto
from tests.support.recordings import (
    RATE,
    Served,
    best_lag_s,
    envelope,
    fetch,
    recorded_mono,
    served,
    sink_mono,
)
from tests.support.schemas import validate

SPEECH = "Thông báo của Ủy ban nhân dân xã: lịch tiêm phòng cho trẻ em vào sáng thứ bảy."
SEGMENT_S = 5.0  # recording.segment_s of tests.support.agentproc.base_config
CLOSE_WAIT_S = SEGMENT_S + 30  # a segment closes within SEGMENT_S; the machine may be busy
# Each kill lands 0.8-2 s after a start: measured, all but the first cut the run's own
# open segment at a random point (the recorder is up within the first 0.8 s), and the
# next run repairs it. Issue 12 asks for 20 kills.
KILLS = 20
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def speech_program(tmp_path: Path, source: Source, agent: AgentProcess,
                   lead_s: float = 6) -> tuple[float, float]:
    """A scheduled speech programme; returns its start and end wall times once it aired."""
    wav = media.speech(tmp_path / "speech.wav", SPEECH)
    info = sf.info(wav)
    source.add("m-speech", wav)
    start = whole_second(lead_s)
    source.publish([program("p-rec", ["m-speech"], start)])
    wait_ready(agent, source.version)
    end = start + info.frames / info.samplerate
    wait_for(lambda: time.time() > end + 1 and agent.status()["playing"] is None, 60, 0.1,
             "the programme over")
    return start, end


def recorded(agent: AgentProcess, first: float, last: float) -> Served:
    """The recording of [first, last) once its segments are closed and served."""
    def covered() -> list[Served]:
        reply = fetch(agent.health_url, first, last)
        if reply.status_code == 404:
            return []
        recording = served(reply)
        return [recording] if recording.end >= last else []
    return wait_for(covered, CLOSE_WAIT_S, 1.0, f"the recording of {first}..{last}")[0]


def test_the_recording_matches_what_left_the_card_and_is_uploaded_on_request(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    """One speech programme: upload_recording of its span is sent as soon as it has aired
    (before its segments are closed: the upload waits for them), then GET /recordings of
    it is compared with what left the card, then the upload is checked at the source."""
    source.publish([])
    agent = start_online(agent_factory, broker, central)
    start, end = speech_program(tmp_path, source, agent)
    first, last = start - 1.0, end + 1.0
    span = {"from": datetime.fromtimestamp(first, TZ).isoformat(timespec="milliseconds"),
            "to": datetime.fromtimestamp(last, TZ).isoformat(timespec="milliseconds")}
    cmd = central.command("upload_recording", span, expires_in_s=600)
    central.send_accepted(cmd)

    # Served with a margin: the time-offset search shifts the span by up to 0.2 s.
    recording = recorded(agent, first - 0.25, last + 0.25)
    capture = capture_until(agent, last)
    assert recording.content_type == "audio/ogg"
    assert recording.start <= first

    sink_env = envelope(sink_mono(capture, first, last), capture.rate)
    rec_env = envelope(recorded_mono(recording, first, last), RATE)
    correlation = float(np.corrcoef(rec_env, sink_env)[0, 1])
    lag = best_lag_s(recording, capture, first, last)
    served_s = recording.end - recording.start
    print(f"served {len(recording.body)} bytes for {served_s:.1f} s "
          f"({len(recording.body) * 8 / served_s / 1000:.1f} kbit/s, mostly silence); "
          f"envelope correlation {correlation:.4f}, time offset {lag * 1000:+.0f} ms")
    assert sink_env.max() > 0.05, "the programme did not reach the card"
    assert correlation >= 0.95
    assert abs(lag) <= 0.020

    status = agent.status()
    validate("status", status)
    assert status["recording"]["bytes"] > 0
    assert epoch(status["recording"]["since"]) <= recording.start + 1e-3
    [report] = wait_for(source.play_reports, 20, 0.2, "the play report")
    segment_start = epoch(report["recording_segment"])
    assert any(abs(segment_start - s) < 1e-3 for s, _ in recording.segments), report
    assert segment_start <= epoch(report["started_at"])

    assert fetch(agent.health_url, first, first + 3601).status_code == 400
    assert requests.get(agent.health_url + "/recordings?from=yesterday&to=today",
                        timeout=5).status_code == 400
    assert fetch(agent.health_url, start - 86_400, start - 86_000).status_code == 404

    central.wait_ack(cmd["id"], "completed", timeout=CLOSE_WAIT_S + 30)
    assert central.acks(cmd["id"]) == ["accepted", "completed"]
    [upload] = source.recordings()
    assert upload["content_type"] == "audio/ogg"
    assert epoch(upload["from"]) == epoch(span["from"]) and epoch(upload["to"]) == epoch(span["to"])
    local = served(fetch(agent.health_url, epoch(span["from"]), epoch(span["to"])))
    assert upload["sha256"] == hashlib.sha256(local.body).hexdigest()
    assert upload["bytes"] == len(local.body)
    assert epoch(upload["start"]) == local.start
    assert local.start <= first and local.end >= last

    bad = central.command("upload_recording", {"from": span["from"], "to": span["from"]})
    central.send(bad)
    central.wait_ack(bad["id"], "rejected")


def test_kills_during_recording_leave_a_readable_store(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    rng = random.Random(20261126)
    source.publish([])
    agent = agent_factory()
    store = Path(agent.config["recording"]["dir"])
    began = run_began = time.time()
    cut_open_segment = 0  # kills that cut a segment the killed run had opened
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.8, 2.0))
        cut_open_segment += any(int(p.stem) / 1e6 >= run_began for p in store.glob("*.partial"))
        agent.kill()
        run_began = time.time()
        agent.start(wait=rng.random() < 0.5)
    agent.kill()
    final_start = time.time()
    agent.start()
    print(f"{cut_open_segment} of {KILLS} kills cut the run's own open segment")
    assert cut_open_segment >= 1, "no kill cut a segment being recorded"

    def settled() -> bool:  # the last run repaired what the kills left; its segment is open
        partials = [int(p.stem) / 1e6 for p in store.glob("*.partial")]
        return (len(partials) == 1 and partials[0] >= final_start
                and not list(store.glob("*.repair")))
    wait_for(settled, 60, 0.5, f"crash leftovers repaired: {sorted(store.iterdir())}")
    [open_segment] = store.glob("*.partial")
    size = open_segment.stat().st_size

    def recording_on() -> bool:
        try:
            return open_segment.stat().st_size > size
        except FileNotFoundError:  # its segment_s are over: closed into a finished segment
            return True
    wait_for(recording_on, 30, 0.5, "the open segment growing")
    assert agent.stop() == 0

    segments = sorted(store.iterdir())
    assert all(p.suffix == ".opus" for p in segments), segments
    # A run killed before its first Ogg page of audio was whole leaves nothing that
    # decodes: here 12-13 segments are kept for 14 cut ones (14-15 for 19 when the
    # recorder turned every 0.25 s and so opened its segment sooner after a start). Counted
    # against the cuts, not the kills: on a machine slow to start an agent, a run killed
    # 0.8 s after a start it did not wait for has not begun to record.
    assert len(segments) >= cut_open_segment // 2, \
        f"only {len(segments)} segments for {cut_open_segment} cut open ones"
    for path in segments:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        assert len(audio) == int(path.stem.split("-")[1]) > 0, path.name
    starts = [int(p.stem.split("-")[0]) / 1e6 for p in segments]
    assert starts == sorted(starts) and starts[0] >= began - 1
    assert starts[-1] >= final_start, "no segment of the run after the kills"

    agent.start()
    reply = fetch(agent.health_url, began, time.time())
    assert len(served(reply).segments) == len(segments)


def test_a_killed_recorder_process_is_a_fault_until_it_records_again(
        source: Source, agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory()
    assert agent.process is not None
    agent_pid = agent.process.pid
    store = Path(agent.config["recording"]["dir"])
    first = wait_for(lambda: child_process(agent_pid, b"agent.recording.worker")
                     if list(store.glob("*.partial")) else None, 20, 0.1, "recording")
    [open_segment] = store.glob("*.partial")
    os.kill(first, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: "recording_failed" in agent.fault_codes(), 5, 0.1, "recording_failed")
    [fault] = [f for f in agent.status()["faults"] if f["code"] == "recording_failed"]
    assert fault["message"] == "the recorder process exited with signal 9"
    second = wait_for(lambda: child_process(agent_pid, b"agent.recording.worker"),
                      10, 0.1, "the recorder process started again")
    assert second != first
    # The next segment (segment_s 5 s) is stored by the new recorder: the fault clears.
    wait_for(lambda: "recording_failed" not in agent.fault_codes(), SEGMENT_S + 20, 0.2,
             "recording_failed cleared")
    # The new recorder started a second or more after the kill, yet its first segment
    # starts at the kill: the record pipe kept what left the card meanwhile.
    starts = sorted(int(p.stem.split("-")[0]) / 1e6 for p in store.glob("*.opus"))
    resumed = [start for start in starts if start > int(open_segment.stem) / 1e6]
    assert resumed and resumed[0] <= killed_at + 0.5, (starts, killed_at)
    assert agent.stop() == 0
