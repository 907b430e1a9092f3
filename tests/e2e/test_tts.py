"""Text to speech end to end: a scheduled ``tts`` program is spoken by the real espeak-ng,
rendered once into the agent's cache, decoded by libvlc, and starts on its second."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from tests.conftest import TZ, AgentFactory, Source, capture_until, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import local_time, wait_for
from tests.support.schemas import validate
from tests.support.wavfile import Samples, rms_dbfs

TEXT = "Kính mời bà con đến nhà văn hoá họp lúc bảy giờ tối."
LEAD_S = 7.0
SPEECH_BAND_HZ = (300.0, 3400.0)
SOUND = 64  # sample magnitude of the first audible frame


def band_dbfs(segment: Samples, rate: int, band: tuple[float, float]) -> float:
    """Level of the left channel within ``band`` (Hz), relative to full scale."""
    mono = segment[:, 0].astype(np.float64) if segment.ndim == 2 else segment.astype(np.float64)
    spectrum = np.fft.rfft(mono)
    freqs = np.fft.rfftfreq(mono.size, 1 / rate)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    filtered = np.fft.irfft(spectrum, mono.size)
    rms = float(np.sqrt(np.mean(filtered ** 2)))
    return 20 * math.log10(max(rms, 1e-9) / 32768)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_tts_program_is_spoken_on_time_and_rendered_once(
        source: Source, agent_factory: AgentFactory) -> None:
    start = whole_second(LEAD_S)
    source.publish([{"id": "p-tts", "title": "Thông báo", "priority": "scheduled",
                     "source": {"type": "tts", "text": TEXT, "lang": "vi"},
                     "start": local_time(start, TZ), "repeat": 2}])
    agent = agent_factory(amplifier={"warmup_s": 0.2, "idle_off_s": 30},
                          audio={"default_volume": 100})
    wait_ready(agent, source.version)
    assert start - time.time() > 1.0, "setup too slow for the program's start"

    def two_reports() -> list[dict[str, Any]]:
        reports = source.play_reports()
        return reports if len(reports) >= 2 else []
    first, second = sorted(wait_for(two_reports, LEAD_S + 20, 0.1, "two play reports"),
                           key=lambda r: epoch(r["started_at"]))
    for report in (first, second):
        validate("report", report)
        assert (report["program_id"], report["source"], report["text"], report["outcome"]) \
            == ("p-tts", "tts", TEXT, "completed")
    [rendered] = list((agent.tmp / "cache" / "tts").iterdir())  # one text, rendered once
    speech, rate = media.read_wav(rendered)
    spoken_s = speech.shape[0] / rate
    assert first["played_s"] == pytest.approx(spoken_s, abs=0.05)
    assert abs(epoch(first["started_at"]) - start) <= 0.005
    assert epoch(second["started_at"]) == pytest.approx(start + spoken_s, abs=0.05)

    capture = capture_until(agent, start + 2 * spoken_s + 0.5)
    lead_in = int(np.flatnonzero(np.abs(speech).max(axis=1) >= SOUND)[0]) / rate
    heard = capture.first_non_silent(SOUND, after_epoch=start - 1.0)
    assert heard is not None
    assert capture.time_of(heard) == pytest.approx(start + lead_in, abs=0.01)
    quiet = band_dbfs(capture.segment(start - 1.0, 0.9), capture.rate, SPEECH_BAND_HZ)
    for begin in (start, start + spoken_s):
        spoken = capture.segment(begin, spoken_s)
        assert band_dbfs(spoken, capture.rate, SPEECH_BAND_HZ) > max(quiet, -90.0) + 40
        assert rms_dbfs(spoken) == pytest.approx(rms_dbfs(speech), abs=1.5)
    after = capture.segment(start + 2 * spoken_s + 0.1, 0.3)
    assert band_dbfs(after, capture.rate, SPEECH_BAND_HZ) < -80
