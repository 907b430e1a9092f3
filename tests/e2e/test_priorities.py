"""Priorities on air, end to end: an emergency command sent by the central server over a
real Mosquitto (signed) preempts a scheduled program in the real agent; the chime and the
message come out at ``audio.emergency_volume``, the program restarts from its beginning,
and acks, events, Status and the simulator's play reports tell the same story. Every
transition in the capture is ramped: no sample step larger than the audio itself holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.playout.engine import FADE_IN_S, FADE_OUT_S
from agent.playout.sources import builtin_chime
from drivers.mixer.curve import effective_volume, volume_to_db, volume_to_gain
from tests.conftest import AgentFactory, Source, capture_until, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central import Central, agent_mqtt_config
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import validate
from tests.support.wavfile import Capture, Samples, max_step, rms_dbfs, tone_frequency

DEVICE = "xa-test-01"
KEY = Ed25519PrivateKey.generate()
RATE = 48000
PROGRAM_VOLUME = 50
EMERGENCY_VOLUME = 80
LEAD_S = 7.0
PREEMPT_AFTER_S = 1.5  # the emergency is sent this long into the program
CHIME = np.frombuffer(builtin_chime(RATE), dtype="<i2").reshape(-1, 2)
CHIME_S = CHIME.shape[0] / RATE
LEVEL_TOLERANCE_DB = 0.5
STEP_MARGIN = 1.1  # rounding and summing add a little; a click adds about the amplitude


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto.start(tmp_path / "mosquitto", {DEVICE: []})
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def central(broker: Mosquitto) -> Iterator[Central]:
    with Central(broker, DEVICE, KEY) as client:
        yield client


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def start_agent(source: Source, agent_factory: AgentFactory, broker: Mosquitto,
                central: Central, start: float) -> AgentProcess:
    agent = agent_factory(**agent_mqtt_config(broker, DEVICE, KEY),
                          audio={"default_volume": 100, "emergency_volume": EMERGENCY_VOLUME},
                          amplifier={"warmup_s": 0.2, "idle_off_s": 30})
    wait_ready(agent, source.version)
    central.wait_online()
    assert start - time.time() >= 1.5, "setup too slow for the program's start"
    return agent


def play_reports(source: Source, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]]:
        reports = source.play_reports()
        return reports if len(reports) >= count else []
    reports = wait_for(enough, timeout, 0.1, f"{count} play reports")
    for report in reports:
        validate("report", report)
    return sorted(reports, key=lambda r: epoch(r["started_at"]))


def playing(agent: AgentProcess, program_id: str) -> dict[str, Any]:
    """Status ``playing`` when it is ``program_id``, else an empty dict."""
    on_air: dict[str, Any] = agent.status()["playing"] or {}
    return on_air if on_air.get("program_id") == program_id else {}


def assert_tone(capture: Capture, start: float, seconds: float, frequency: float) -> None:
    found = tone_frequency(capture.segment(start, seconds), capture.rate)
    assert abs(found - frequency) < frequency * 0.01, \
        f"{found:.1f} Hz at {start:.3f}+{seconds} s, expected {frequency} Hz"


def assert_level(capture: Capture, start: float, seconds: float, material: Samples,
                 volume: int, tolerance_db: float = LEVEL_TOLERANCE_DB) -> None:
    expected = rms_dbfs(material) + volume_to_db(volume)
    found = rms_dbfs(capture.segment(start, seconds))
    assert found == pytest.approx(expected, abs=tolerance_db), \
        f"{found:.2f} dBFS at {start:.3f}+{seconds} s, expected {expected:.2f} (volume {volume})"


@dataclass(frozen=True)
class Material:
    """What a voice plays, at its gain: the largest sample step and second difference it
    holds itself, and its peak (a ramp of n frames adds at most peak / n to both)."""

    step: float
    curvature: float
    peak: float

    @classmethod
    def of(cls, samples: Samples, volume: int) -> Material:
        gain = volume_to_gain(volume)
        return cls(max_step(samples) * gain, max_curvature(samples) * gain,
                   float(np.abs(samples.astype(np.int32)).max()) * gain)


def max_curvature(segment: Samples) -> int:
    """Largest |x[n+1] - 2 x[n] + x[n-1]|: tiny for audio, about the sample value at a cut."""
    if segment.shape[0] < 3:
        return 0
    return int(np.abs(np.diff(segment.astype(np.int32), n=2, axis=0)).max())


def click_in(window: Samples, sides: list[Material], ramped: bool = True) -> str | None:
    """Why ``window`` (a transition between the voices playing ``sides``) clicks, or None.
    The engine fades in over FADE_IN_S (240 frames at 48 kHz) and out over FADE_OUT_S.
    ``ramped``: the engine cut or started a voice there; at the natural end of a source
    only the step is checked (the material's own last samples are its own)."""
    ramp_frames = round(RATE * FADE_IN_S)
    step_allowed = sum(m.step + m.peak / ramp_frames for m in sides) * STEP_MARGIN + 16
    curvature_allowed = sum(m.curvature + 2 * m.peak / ramp_frames for m in sides) \
        * STEP_MARGIN + 16
    if max_step(window) > step_allowed:
        return f"step {max_step(window)} > {step_allowed:.0f}"
    if ramped and max_curvature(window) > curvature_allowed:
        return f"second difference {max_curvature(window)} > {curvature_allowed:.0f}"
    return None


Transition = tuple[float, list[Material], bool]


def assert_no_clicks(capture: Capture, transitions: dict[str, Transition]) -> None:
    """``transitions``: name -> (wall time, the material playing on either side, whether
    the engine ramped there), in what the agent wrote (Capture.as_written: a stop where the
    card ran dry is the machine's)."""
    written = capture.as_written()
    for name, (at, sides, ramped) in transitions.items():
        why = click_in(written.segment(at - 0.03, 0.08), sides, ramped)
        assert why is None, f"click at {name} ({at:.3f}): {why}"


def test_click_detector_flags_a_hard_cut_and_passes_the_engines_ramp() -> None:
    t = np.arange(RATE // 10) / RATE
    tone = (np.sin(2 * np.pi * 600 * t) * 3000).astype(np.int16)[:, None].repeat(2, axis=1)
    material = Material.of(tone, 100)
    cut_at = int(np.argmax(tone[:, 0] > 300))  # a cut at 10 % of the peak
    hard = tone.copy()
    hard[cut_at:] = 0
    ramped = tone.astype(np.float64)
    fade = round(RATE * FADE_OUT_S)
    ramped[cut_at:cut_at + fade] *= (1 - (np.arange(fade) + 1) / fade)[:, None]
    ramped[cut_at + fade:] = 0
    assert click_in(hard, [material]) is not None
    assert click_in(ramped.astype(np.int16), [material]) is None


def announcement(path: Path, frequency_hz: float, seconds: float) -> Path:
    """A tone at -6 dBFS that fades in and out over 20 ms, as a recorded message does (so
    that its own ends are smooth and any kink at a transition is the engine's)."""
    t = np.arange(round(RATE * seconds)) / RATE
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.020)
    wave_ = np.sin(2 * np.pi * frequency_hz * t) * envelope * 32767 * 10 ** (-6 / 20)
    return media.write_frames(path, np.repeat(wave_.astype("<i2")[:, None], 2, axis=1), RATE)


def publish_program(tmp_path: Path, source: Source) -> tuple[float, Samples]:
    """The scheduled program: 600 Hz for 1 s then 800 Hz for 3 s (the tone tells where it
    is), at volume 50 without an end: it resumes whatever the preemption."""
    wav = media.tones(tmp_path / "program.wav", [(600, 1.0), (800, 3.0)])
    source.add("m-prog", wav)
    return whole_second(LEAD_S), media.read_wav(wav)[0]


def schedule(source: Source, start: float) -> None:
    source.publish([program("p-1", ["m-prog"], start, volume=PROGRAM_VOLUME)])


@pytest.mark.parametrize("message", ["media_id", "text"])
def test_emergency_preempts_chime_and_message_at_emergency_volume_then_program_restarts(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, broker: Mosquitto,
        central: Central, message: str) -> None:
    start, program_pcm = publish_program(tmp_path, source)
    alert_wav = announcement(tmp_path / "alert.wav", 1500, 2.0)
    source.add("m-alert", alert_wav)
    schedule(source, start)
    agent = start_agent(source, agent_factory, broker, central, start)
    text = "Khẩn cấp. Bà con chú ý, nước sông đang lên."
    args: dict[str, Any] = {"media_id": "m-alert"} if message == "media_id" else {"text": text}

    time.sleep(max(0.0, start + PREEMPT_AFTER_S - time.time()))
    assert agent.status()["playing"]["priority"] == "scheduled"
    cmd = central.command("emergency", args)
    central.send(cmd)
    central.wait_ack(cmd["id"], "accepted", timeout=1.0)
    on_air = wait_for(lambda: playing(agent, f"cmd:{cmd['id']}"), 5, 0.05,
                      "the emergency in Status")
    assert on_air["priority"] == "emergency"
    central.wait_ack(cmd["id"], "completed", timeout=20)
    assert central.acks(cmd["id"]) == ["accepted", "completed"]

    preempted, alert, restarted = play_reports(source, 3)
    assert (preempted["program_id"], preempted["outcome"], preempted["priority"]) == (
        "p-1", "preempted", "scheduled")
    assert (alert["program_id"], alert["priority"], alert["outcome"]) == (
        f"cmd:{cmd['id']}", "emergency", "completed")
    assert (alert["media_id"], alert["source"]) == ("m-alert", "media") \
        if message == "media_id" else (alert["text"], alert["source"]) == (text, "tts")
    assert (restarted["program_id"], restarted["outcome"]) == ("p-1", "completed")
    assert restarted["played_s"] == pytest.approx(4.0, abs=0.05), "not restarted from 0"

    alert_at, resumed_at = epoch(alert["started_at"]), epoch(restarted["started_at"])
    alert_end = epoch(alert["ended_at"])
    chime_at = alert_at - CHIME_S
    capture = capture_until(agent, resumed_at + 4.3)
    alert_pcm = media.read_wav(alert_wav)[0] if message == "media_id" else \
        media.read_wav(only(agent.tmp / "cache" / "tts", "*.wav"))[0]

    assert abs(epoch(preempted["ended_at"]) - chime_at) < 0.05
    assert_tone(capture, chime_at + 0.05, 0.4, 659.25)  # the chime's first note
    assert_level(capture, chime_at + 0.01, CHIME_S - 0.02, CHIME, EMERGENCY_VOLUME)
    if message == "media_id":
        assert_tone(capture, alert_at + 0.1, 1.8, 1500)
        assert_level(capture, alert_at + 0.1, 1.8, alert_pcm, EMERGENCY_VOLUME)
    else:
        assert_level(capture, alert_at, alert_end - alert_at, alert_pcm, EMERGENCY_VOLUME,
                     tolerance_db=1.5)
    assert_tone(capture, resumed_at + 0.1, 0.8, 600)  # from its beginning
    assert_tone(capture, resumed_at + 1.5, 2.0, 800)
    assert_level(capture, resumed_at + 1.2, 2.5, program_pcm[RATE:],
                 effective_volume(100, PROGRAM_VOLUME))

    program = Material.of(program_pcm, PROGRAM_VOLUME)
    chime = Material.of(CHIME, EMERGENCY_VOLUME)
    alert_material = Material.of(alert_pcm, EMERGENCY_VOLUME)
    assert_no_clicks(capture, {
        "program start": (start, [program], True),
        "preemption": (chime_at, [program, chime], True),
        "chime to message": (alert_at, [chime, alert_material], False),
        "end of the emergency": (alert_end, [alert_material, program], False),
        "resume": (resumed_at, [alert_material, program], True),
        "program end": (resumed_at + 4.0, [program], False)})

    events = central.payloads("events")
    for record in events:
        validate("event", record)
    for ack in central.payloads("acks"):
        validate("ack", ack)
    started = [e for e in events if e["type"] == "play_started"]
    assert [(e["program_id"], e["priority"]) for e in started] == [
        ("p-1", "scheduled"), (f"cmd:{cmd['id']}", "emergency"), ("p-1", "scheduled")]
    finished = [e["record"] for e in events if e["type"] == "play_finished"]
    assert [(r["program_id"], r["priority"], r["outcome"]) for r in finished] == [
        ("p-1", "scheduled", "preempted"), (f"cmd:{cmd['id']}", "emergency", "completed"),
        ("p-1", "scheduled", "completed")]
    assert [(e["program_id"], e["by_program_id"], e["by_priority"]) for e in events
            if e["type"] == "preempted"] == [("p-1", f"cmd:{cmd['id']}", "emergency")]


def only(directory: Path, pattern: str) -> Path:
    [path] = sorted(directory.glob(pattern))
    return path
