"""Scheduled broadcasting end to end: the real agent process pulls a schedule and media from
the real simulator over HTTP, decodes with libvlc and plays into the clocked WAV sink;
the capture, the simulated amplifier's log and the reports the simulator received are
checked against the contracts (source-api.md, hil.md)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.playout.sources import builtin_chime
from drivers.mixer.curve import effective_volume, volume_to_db
from tests.conftest import (
    AgentFactory,
    Source,
    capture_until,
    program,
    wait_ready,
    whole_second,
)
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.schemas import validate
from tests.support.wavfile import (
    SILENCE,
    START_TOLERANCE_S,
    Capture,
    first_sound,
    rms_dbfs,
    silent_runs,
    tone_frequency,
)

LEAD_S = 7.0  # programs start this long after they are published
MIN_LEFT_S = 2.0  # what must remain before the start once the agent is ready (pre-roll)
REPORT_TOLERANCE_S = START_TOLERANCE_S + 0.001  # report times are cut to milliseconds
WARMUP_S = 0.5
IDLE_OFF_S = 1.0
AGENT_CONFIG: dict[str, Any] = {"amplifier": {"warmup_s": WARMUP_S, "idle_off_s": IDLE_OFF_S}}


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def start_agent(source: Source, agent_factory: AgentFactory, start: float,
                **overrides: Any) -> AgentProcess:
    agent = agent_factory(**{**AGENT_CONFIG, **overrides})
    wait_ready(agent, source.version)
    left = start - time.time()
    assert left >= MIN_LEFT_S, f"setup too slow: only {left:.2f} s left before the start"
    return agent


def play_reports(source: Source, count: int, by: float) -> list[dict[str, Any]]:
    """The ``count`` play reports, once uploaded (waiting until wall time ``by`` + 10 s)."""
    def uploaded() -> list[dict[str, Any]]:
        reports = source.play_reports()
        return reports if len(reports) >= count else []
    reports = wait_for(uploaded, max(0.0, by - time.time()) + 10, 0.1, f"{count} play reports")
    for report in reports:
        validate("report", report)
    return sorted(reports, key=lambda r: epoch(r["started_at"]))


def silent_gaps(capture: Capture, start: float, seconds: float,
                min_gap_s: float) -> list[tuple[float, float]]:
    """wavfile.silent_runs in what the agent wrote (Capture.as_written: the card's own
    underruns are the machine's, not the schedule's)."""
    return silent_runs(capture.as_written(), start, seconds, min_gap_s)


def assert_tone(capture: Capture, start: float, seconds: float, frequency: float) -> None:
    found = tone_frequency(capture.segment(start, seconds), capture.rate)
    assert abs(found - frequency) < frequency * 0.01, \
        f"{found:.1f} Hz at {start:.3f}+{seconds} s, expected {frequency} Hz"


def test_program_starts_on_its_sample_with_its_audio_level_amplifier_and_report(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    wav = media.tone(tmp_path / "tone.wav", 1000, 3.0, level_dbfs=-6)
    item = source.add("m-1", wav)
    start = whole_second(LEAD_S)
    source.publish([program("p-1", ["m-1"], start, volume=50)])
    agent = start_agent(source, agent_factory, start, audio={"default_volume": 100})
    end = start + 3.0
    capture = capture_until(agent, end + IDLE_OFF_S + 1.0)

    assert abs(first_sound(capture, start - 1.0) - start) <= START_TOLERANCE_S
    assert_tone(capture, start + 0.5, 2.0, 1000)
    expected_db = media.wav_rms_dbfs(wav) + volume_to_db(effective_volume(100, 50))
    assert rms_dbfs(capture.segment(start + 0.5, 2.0)) == pytest.approx(expected_db, abs=1.0)
    assert capture.first_non_silent(SILENCE, after_epoch=end + 0.03) is None, "sound after the end"

    transitions = agent.amplifier_log()
    switched_on = [t["at"] for t in transitions if t["on"] and t["at"] <= start]
    assert switched_on and switched_on[-1] <= start - WARMUP_S
    switched_off = [t["at"] for t in transitions if not t["on"] and t["at"] > switched_on[-1]]
    assert switched_off, f"amplifier never switched off: {transitions}"
    assert switched_off[0] - end == pytest.approx(IDLE_OFF_S, abs=0.5)

    [report] = play_reports(source, 1, end)
    assert {k: report[k] for k in ("program_id", "media_id", "sha256", "source", "priority",
                                   "outcome")} == {
        "program_id": "p-1", "media_id": "m-1", "sha256": item["sha256"], "source": "media",
        "priority": "scheduled", "outcome": "completed"}
    assert abs(epoch(report["started_at"]) - start) <= REPORT_TOLERANCE_S
    assert report["played_s"] == pytest.approx(3.0, abs=0.05)


def assert_play(report: dict[str, Any], media_id: str, started: float, played_s: float,
                program_id: str = "p-1") -> None:
    assert (report["program_id"], report["media_id"], report["outcome"]) == (
        program_id, media_id, "completed"), report
    assert abs(epoch(report["started_at"]) - started) <= REPORT_TOLERANCE_S, report
    assert report["played_s"] == pytest.approx(played_s, abs=0.05), report


def test_two_items_play_gaplessly_with_one_report_each(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    source.add("m-a", media.tone(tmp_path / "a.wav", 1000, 2.0))
    source.add("m-b", media.tone(tmp_path / "b.wav", 500, 2.0))
    start = whole_second(LEAD_S)
    source.publish([program("p-1", ["m-a", "m-b"], start)])
    agent = start_agent(source, agent_factory, start)
    capture = capture_until(agent, start + 4.2)

    assert abs(first_sound(capture, start - 1.0) - start) <= START_TOLERANCE_S
    assert silent_gaps(capture, start, 4.0, 0.020) == []
    assert_tone(capture, start + 0.5, 1.0, 1000)
    assert_tone(capture, start + 2.5, 1.0, 500)
    first, second = play_reports(source, 2, start + 4.0)
    assert_play(first, "m-a", start, 2.0)
    assert_play(second, "m-b", start + 2.0, 2.0)


@pytest.mark.parametrize("gap_s", [1.5, 4.0], ids=["gap-within-preroll", "gap-beyond"])
def test_repeat_gap_leaves_exactly_that_silence_between_repetitions(
        tmp_path: Path, source: Source, agent_factory: AgentFactory, gap_s: float) -> None:
    source.add("m-a", media.tone(tmp_path / "a.wav", 1000, 1.0))
    source.add("m-b", media.tone(tmp_path / "b.wav", 500, 1.0))
    start = whole_second(LEAD_S)
    source.publish([program("p-1", ["m-a", "m-b"], start, repeat=2, repeat_gap_s=gap_s)])
    agent = start_agent(source, agent_factory, start)
    second = start + 2.0 + gap_s
    capture = capture_until(agent, second + 2.2)

    assert abs(first_sound(capture, start - 1.0) - start) <= START_TOLERANCE_S
    assert silent_gaps(capture, start, 2.0, 0.020) == []  # gapless within a repetition
    assert abs(first_sound(capture, start + 2.05) - second) <= START_TOLERANCE_S
    assert_tone(capture, second + 0.3, 0.5, 1000)
    assert_tone(capture, second + 1.3, 0.5, 500)
    assert [(round(at, 2), round(length, 2))
            for at, length in silent_gaps(capture, start, 4.0 + gap_s, 0.020)] == \
        [(2.0, gap_s)]
    reports = play_reports(source, 4, second + 2.0)
    assert [epoch(r["started_at"]) - start for r in reports] == pytest.approx(
        [0.0, 1.0, 2.0 + gap_s, 3.0 + gap_s], abs=REPORT_TOLERANCE_S)


CODECS = {"mp3": (media.to_mp3, "audio/mpeg"), "ogg": (media.to_ogg, "audio/ogg")}
CODEC_SPACING_S = 4.0  # 2 s programmes, each cued while the one before plays


def test_compressed_media_decode_through_libvlc(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """An MP3 and an Ogg Vorbis file, a programme each, decoded by libvlc in one agent."""
    wav = media.tone(tmp_path / "tone.wav", 1000, 2.0)
    for suffix, (encode, mime) in CODECS.items():
        source.add(f"m-{suffix}", encode(wav, tmp_path / f"tone.{suffix}"), duration_s=2.0,
                   mime=mime)
    first = whole_second(LEAD_S)
    starts = {suffix: first + n * CODEC_SPACING_S for n, suffix in enumerate(CODECS)}
    source.publish([program(f"p-{suffix}", [f"m-{suffix}"], start)
                    for suffix, start in starts.items()])
    agent = start_agent(source, agent_factory, first)
    last = max(starts.values())
    capture = capture_until(agent, last + 2.5)

    for suffix, start in starts.items():
        # The codec's priming delay: within 0.1 s.
        assert abs(first_sound(capture, start - 1.0) - start) <= 0.1, suffix
        assert_tone(capture, start + 0.5, 1.0, 1000)
        assert rms_dbfs(capture.segment(start + 0.5, 1.0)) == pytest.approx(
            media.wav_rms_dbfs(wav), abs=1.0), suffix
    reports = play_reports(source, len(CODECS), last + 2.5)
    assert [(r["media_id"], r["outcome"]) for r in reports] == \
        [(f"m-{suffix}", "completed") for suffix in CODECS]
    for report in reports:
        assert report["played_s"] == pytest.approx(2.0, abs=0.1), report


def test_chime_then_the_item(tmp_path: Path, source: Source,
                             agent_factory: AgentFactory) -> None:
    source.add("m-1", media.tone(tmp_path / "tone.wav", 1000, 2.0))
    start = whole_second(LEAD_S)
    source.publish([program("p-1", ["m-1"], start, chime=True)])
    agent = start_agent(source, agent_factory, start)
    chime_s = len(builtin_chime(48000)) / 4 / 48000
    capture = capture_until(agent, start + chime_s + 2.2)

    assert abs(first_sound(capture, start - 1.0) - start) <= START_TOLERANCE_S
    assert_tone(capture, start + 0.05, 0.4, 659.25)  # the chime's first note (E5)
    assert_tone(capture, start + chime_s + 0.2, 1.5, 1000)
    [report] = play_reports(source, 1, start + chime_s + 2.0)
    assert_play(report, "m-1", start + chime_s, 2.0)
