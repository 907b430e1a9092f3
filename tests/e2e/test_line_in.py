"""The line input end to end: the real agent process "captures" a WAV through the virtual
capture card of hil.md (``line_in.input: wav:<path>``) and relays it into the clocked WAV
sink: VOX, a scheduled ``line_in`` program, the ``line_in`` command over a real Mosquitto,
and the faults of a missing or silent input. When each input sample was captured comes
from the input's sidecar, when it left the card from the sink's, so capture-to-card
latency is measured sample-exactly (the relayed audio is the input, delayed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from agent.playout.host import PERIOD_S
from drivers.mixer.curve import effective_volume, volume_to_db
from tests.conftest import AgentFactory, Source, capture_until, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, local_time, wait_for
from tests.support.central_checks import CheckedCentral, epoch, start_online
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import Capture, Samples, delay_s, rms_dbfs

RATE = 48_000
BLOCK = 240  # the virtual capture card's 5 ms blocks
HISS_DBFS = -65.0  # a microphone's own noise: below VOX's threshold and audio.dead_air_dbfs
THRESHOLD_DBFS = -30.0
ON_AFTER_S = 0.5
OFF_AFTER_S = 2.0
LATENCY_S = 0.05  # capture to card (issue 12)
LEVEL_TOLERANCE_DB = 0.5
IDLE_OFF_S = 1.0
LEAD_S = 8.0  # scheduled programs start this long after they are published
SPEECH = ("Kính mời bà con trong xã đến nhà văn hoá thôn lúc bảy giờ tối nay để họp bàn "
          "về việc phòng chống bão lụt và bảo vệ mùa màng")


def line_in_config(path: Path, **line_in: Any) -> dict[str, Any]:
    return {"line_in": {"input": f"wav:{path}", **line_in},
            "amplifier": {"warmup_s": 0, "idle_off_s": IDLE_OFF_S},
            "audio": {"default_volume": 100}}


def capture_start(path: Path, timeout: float = 10) -> float:
    """When the agent's virtual capture card captured the first sample of ``path``."""
    sidecar = path.with_name(path.name + ".json")
    wait_for(sidecar.exists, timeout, 0.05, f"{sidecar}")
    return float(json.loads(sidecar.read_text())["start_epoch"])


def block_levels(mono: Samples) -> np.ndarray:
    """RMS dBFS of each 5 ms capture block."""
    usable = mono[:mono.size // BLOCK * BLOCK].astype(np.float64).reshape(-1, BLOCK)
    rms = np.sqrt(np.mean(usable * usable, axis=1))
    levels: np.ndarray = 20 * np.log10(np.maximum(rms, 1e-9) / 32768)
    return levels


def on_air_span(capture: Capture, after: float) -> tuple[float, float]:
    """Wall times of the first and one past the last non-zero sample after ``after``: the
    card gets digital zeros whenever nothing is on air, and the input always hisses."""
    begin = capture.index_at(after)
    sound = np.flatnonzero(np.abs(capture.samples[begin:].astype(np.int32)).max(axis=1) > 0)
    assert sound.size, f"nothing on air after {after:.3f}"
    return capture.time_of(begin + int(sound[0])), capture.time_of(begin + int(sound[-1]) + 1)


def relayed(capture: Capture, on_air: float, seconds: float, source: Samples,
            source_start: float) -> tuple[float, float]:
    """(capture-to-card delay, level difference in dB) of ``seconds`` relayed from
    ``on_air``: the card's left channel against the input captured from ``source_start``."""
    card = capture.segment(on_air, seconds)[:, :1]
    out = card[:, 0].astype(np.float64)
    first = round((on_air - LATENCY_S * 2 - source_start) * RATE)
    reference = source[first:first + out.size + round(LATENCY_S * 2 * RATE), 0]
    lag = delay_s(reference.astype(np.float64), out, RATE, LATENCY_S * 2)
    aligned = source[first + round((LATENCY_S * 2 - lag) * RATE):][:out.size]
    return lag, rms_dbfs(card) - rms_dbfs(aligned)


def play_report(source: Source, predicate: Any, timeout: float = 15) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [r for r in source.play_reports() if predicate(r)]
    [report] = wait_for(found, timeout, 0.1, "the line_in play report")
    validate("report", report)
    return report


def amplifier_switches(agent: AgentProcess, on: bool, after: float) -> list[float]:
    return [t["at"] for t in agent.amplifier_log() if t["on"] == on and t["at"] >= after]


def lost_s(capture: Capture, start: float, end: float) -> float:
    """Seconds of digital silence the card played in ``[start, end)``: input the relay
    lost (the input always carries at least its hiss, so a relayed 5 ms is never all 0)."""
    span = capture.samples[capture.index_at(start):capture.index_at(end), 0]
    windows = span[:span.size // 240 * 240].reshape(-1, 240)
    return float(np.count_nonzero(~windows.any(axis=1))) * 240 / capture.rate


def test_vox_puts_the_speech_on_air_at_once_at_its_level_and_takes_it_off_after_the_pause(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    spoken, _ = media.read_wav(media.speech(tmp_path / "speech.wav", SPEECH, rate=RATE))
    spoken = spoken[:, :1]
    loud = np.flatnonzero(block_levels(spoken) > THRESHOLD_DBFS)
    speech = spoken[loud[0] * BLOCK:(loud[-1] + 1) * BLOCK]  # from its first loud block
    silence_s = 10.0
    frames = np.concatenate([np.zeros((round(silence_s * RATE), 1)), speech,
                             np.zeros((round(6.0 * RATE), 1))])
    frames = np.clip(frames + media.noise(frames.shape[0] / RATE, HISS_DBFS), -32768, 32767)
    mic = media.write_frames(tmp_path / "mic.wav", frames.astype(np.int16))
    source.publish([])
    agent = start_online(agent_factory, broker, central, **line_in_config(
        mic, vox=True, threshold_dbfs=THRESHOLD_DBFS, on_after_s=ON_AFTER_S,
        off_after_s=OFF_AFTER_S))
    started = capture_start(mic)
    speech_start = started + silence_s
    speech_end = speech_start + speech.shape[0] / RATE
    assert time.time() < speech_start - 1.0, "setup too slow: the speech already began"
    idle = wait_for(lambda: agent.status()["line_in"] if agent.status()["line_in"][
        "level_dbfs"] is not None else None, 5, 0.05, "the input's level")
    assert idle == {"level_dbfs": pytest.approx(HISS_DBFS, abs=6), "on_air": False}

    time.sleep(max(0.0, speech_start + 2.0 - time.time()))
    speaking = agent.status()
    validate("status", speaking)
    assert speaking["line_in"]["on_air"] is True
    assert speaking["line_in"]["level_dbfs"] > THRESHOLD_DBFS
    assert speaking["playing"]["source"] == "line_in"
    assert speaking["playing"]["program_id"].startswith("vox:")

    capture = capture_until(agent, speech_end + OFF_AFTER_S + IDLE_OFF_S + 2.0)
    on_air, off_air = on_air_span(capture, started)
    lag, level_db = relayed(capture, on_air + 0.2, speech_end - on_air - 0.4,
                            frames.astype(np.int16), started)
    print(f"VOX: on air {(on_air - speech_start) * 1000:.1f} ms after the first sample of "
          f"the speech (on_after_s {ON_AFTER_S}), relayed {lag * 1000:.1f} ms behind the "
          f"capture at {level_db:+.2f} dB; off {off_air - speech_end:.3f} s after the speech "
          f"ended (off_after_s {OFF_AFTER_S})")
    assert ON_AFTER_S <= on_air - speech_start <= ON_AFTER_S + LATENCY_S
    assert 0 < lag <= LATENCY_S
    assert abs(level_db) <= LEVEL_TOLERANCE_DB
    # The level meter's release (60 dB/s) adds a little to the pause VOX waits for.
    assert OFF_AFTER_S <= off_air - speech_end <= OFF_AFTER_S + 0.5
    assert agent.status()["line_in"]["on_air"] is False

    [switched_on] = amplifier_switches(agent, True, started)
    assert speech_start + ON_AFTER_S - 0.1 <= switched_on <= on_air
    [switched_off] = amplifier_switches(agent, False, switched_on)
    assert switched_off - off_air == pytest.approx(IDLE_OFF_S, abs=0.5)

    report = play_report(source, lambda r: r["source"] == "line_in")
    assert report["program_id"].startswith("vox:")
    assert (report["priority"], report["outcome"]) == ("live", "completed")
    assert epoch(report["started_at"]) == pytest.approx(on_air, abs=0.005)
    # What the report claims is what the card carried: audio the relay lost under load
    # (issue 10: the capture is relayed by the agent's non-real-time feeder) is not in it.
    lost = lost_s(capture, on_air, off_air)
    print(f"VOX relay: {lost:.3f} s of the input lost on the way to the card")
    assert report["played_s"] == pytest.approx(off_air - on_air - lost, abs=0.1)
    def line_in_events() -> list[dict[str, Any]]:
        events = central.events("line_in_on", "line_in_off")
        return events if len(events) == 2 else []
    on, off = wait_for(line_in_events, 10, 0.1, "line_in_on and line_in_off")
    assert (on["type"], off["type"]) == ("line_in_on", "line_in_off")
    assert on["program_id"] == off["program_id"] == report["program_id"]
    assert (on["trigger"], off["outcome"]) == ("vox", "completed")


def scheduled_line_in(program_id: str, start: float, duration_s: float,
                      **fields: Any) -> dict[str, Any]:
    return {"id": program_id, "title": "Micro của xã", "priority": "scheduled",
            "source": {"type": "line_in"}, "start": local_time(start),
            "duration_s": duration_s, **fields}


def test_a_scheduled_line_in_program_relays_the_input_for_its_window(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    mixer = media.noise(60.0, -20.0, seed=3)  # the mixer's programme: anything non-periodic
    mic = media.write_frames(tmp_path / "mixer.wav", mixer)
    start, duration_s, volume = whole_second(LEAD_S), 4.0, 80
    source.publish([scheduled_line_in("p-mic", start, duration_s, volume=volume)])
    agent = agent_factory(**line_in_config(mic))
    wait_ready(agent, source.version)
    started = capture_start(mic)
    assert time.time() < start - 2.0, "setup too slow"
    end = start + duration_s

    time.sleep(max(0.0, start + 1.5 - time.time()))
    relaying = agent.status()
    validate("status", relaying)
    assert relaying["line_in"]["on_air"] is True
    assert relaying["line_in"]["level_dbfs"] == pytest.approx(-20.0, abs=1.5)
    assert (relaying["playing"]["source"], relaying["playing"]["program_id"]) == ("line_in",
                                                                                  "p-mic")

    capture = capture_until(agent, end + 1.0)
    on_air, off_air = on_air_span(capture, start - 1.0)
    lag, level_db = relayed(capture, start + 0.2, duration_s - 0.4, mixer, started)
    expected_db = volume_to_db(effective_volume(100, volume))
    print(f"line_in program: first sample {(on_air - start) * 1000:+.1f} ms from its start, "
          f"last {(off_air - end) * 1000:+.1f} ms from its end, {lag * 1000:.1f} ms behind "
          f"the capture, {level_db:+.2f} dB (volume {volume}: {expected_db:+.2f} dB)")
    assert abs(on_air - start) <= 0.005  # cued ahead on its frame, like any program
    assert -0.1 <= off_air - end <= 0.15
    assert 0 < lag <= LATENCY_S
    assert level_db == pytest.approx(expected_db, abs=LEVEL_TOLERANCE_DB)

    report = play_report(source, lambda r: r["program_id"] == "p-mic")
    assert (report["source"], report["priority"], report["outcome"]) == ("line_in", "scheduled",
                                                                         "completed")
    assert epoch(report["started_at"]) == pytest.approx(start, abs=0.006)
    lost = lost_s(capture, on_air, off_air)
    print(f"line_in program: {lost:.3f} s of the input lost on the way to the card")
    assert report["played_s"] == pytest.approx(off_air - on_air - lost, abs=0.1)


def test_the_line_in_command_puts_the_input_on_air_for_its_duration(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: CheckedCentral) -> None:
    mixer = media.noise(60.0, -20.0, seed=4)
    mic = media.write_frames(tmp_path / "mixer.wav", mixer)
    source.publish([])
    agent = start_online(agent_factory, broker, central, **line_in_config(mic))
    started = capture_start(mic)

    bad = central.command("line_in", {"duration_s": 0})
    central.send(bad)
    rejection = central.wait_ack(bad["id"], "rejected", timeout=2)
    assert rejection["reason"].startswith("bad_args: duration_s must be > 0")

    duration_s, volume = 2.0, 50
    cmd = central.command("line_in", {"duration_s": duration_s, "volume": volume})
    sent = central.send(cmd)
    central.wait_ack(cmd["id"], "accepted", timeout=1)
    central.wait_ack(cmd["id"], "completed", timeout=duration_s + 5)
    capture = capture_until(agent, time.time())
    on_air, off_air = on_air_span(capture, sent)
    lag, level_db = relayed(capture, on_air + 0.2, duration_s - 0.4, mixer, started)
    print(f"line_in command: on air {(on_air - sent) * 1000:.0f} ms after it was sent, for "
          f"{off_air - on_air:.3f} s, {lag * 1000:.1f} ms behind the capture, {level_db:+.2f} dB")
    assert on_air - sent < 1.0
    assert off_air - on_air == pytest.approx(duration_s, abs=0.15)
    assert 0 < lag <= LATENCY_S
    assert level_db == pytest.approx(volume_to_db(effective_volume(100, volume)),
                                     abs=LEVEL_TOLERANCE_DB)
    report = play_report(source, lambda r: r["program_id"] == f"cmd:{cmd['id']}")
    assert (report["source"], report["priority"], report["outcome"]) == ("line_in", "live",
                                                                         "completed")
    on = central.wait("events", lambda e: e["type"] == "line_in_on")
    assert (on["program_id"], on["trigger"]) == (f"cmd:{cmd['id']}", "command")


def test_a_missing_input_is_a_fault_the_agent_runs_on_and_its_program_is_reported_failed(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    start = whole_second(LEAD_S)
    source.publish([scheduled_line_in("p-mic", start, 2.0)])
    agent = agent_factory(**line_in_config(tmp_path / "no-such.wav"))
    wait_ready(agent, source.version)
    wait_for(lambda: "line_in_failed" in agent.fault_codes(), 5, 0.1, "fault line_in_failed")
    status = agent.status()
    validate("status", status)
    assert status["line_in"]["level_dbfs"] is None
    assert "no-such.wav: cannot read the input" in next(
        f["message"] for f in status["faults"] if f["code"] == "line_in_failed")
    assert requests.get(agent.health_url + "/healthz", timeout=2).status_code == 503
    report = play_report(source, lambda r: r["program_id"] == "p-mic",
                         timeout=start + 2.0 + 10 - time.time())
    assert (report["source"], report["outcome"]) == ("line_in", "failed")
    assert agent.process is not None and agent.process.poll() is None


def test_a_silent_line_input_on_air_is_dead_air_and_reported_failed(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    mic = media.write_frames(tmp_path / "mic.wav", media.noise(60.0, -70.0, seed=5))
    start, duration_s, dead_air_s = whole_second(LEAD_S), 4.0, 1.0
    source.publish([scheduled_line_in("p-mic", start, duration_s)])
    config = line_in_config(mic)
    config["audio"]["dead_air_s"] = dead_air_s
    agent = agent_factory(**config)
    wait_ready(agent, source.version)
    time.sleep(max(0.0, start - time.time()))
    wait_for(lambda: "dead_air" in agent.fault_codes(), dead_air_s + 1.5, 0.05,
             f"dead_air within {dead_air_s + 1.5} s of the start")
    raised = time.time() - start
    print(f"dead_air raised {raised:.2f} s after the silent line input went on air")
    # Not before dead_air_s of silence on the card's timeline, which the sink maps to wall
    # time within one engine period.
    assert raised >= dead_air_s - PERIOD_S
    report = play_report(source, lambda r: r["program_id"] == "p-mic",
                         timeout=duration_s + 10)
    assert (report["source"], report["outcome"]) == ("line_in", "failed")
    wait_for(lambda: "dead_air" not in agent.fault_codes(), 3, 0.1, "dead_air cleared")
