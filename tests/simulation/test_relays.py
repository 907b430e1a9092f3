"""Relays that carry nothing, on the simulated core: an FM program with no receiver or no
station is reported ``failed`` with its fault and the next program still starts on time; a
dead live stream raises ``stream_unavailable`` (at once when it ends, after ``dead_air_s``
when it sends silence), relays the FM fallback or keeps silence, and returns when the
stream does. Real audio, the fake rtl_tcp dongle and real streams stay in tests/e2e
(test_fm.py, test_streams.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.simulation import events as ev
from tests.simulation.scenario import Scenario, epoch
from tests.simulation.world import SETTINGS

STREAM = ev.STREAMS[0]
FALLBACK_MHZ = ev.FREQUENCIES[0]  # the fm_fallback of a published schedule
PROBE_S = 5.0  # the agent probes a dead stream this often
LEAD_S = 5


def fm_program(program_id: str, frequency_mhz: float, start: int,
               duration_s: int) -> dict[str, Any]:
    return {"id": program_id, "title": "t", "priority": "scheduled", "start": start,
            "source": {"type": "fm", "frequency_mhz": frequency_mhz},
            "duration_s": duration_s}


@pytest.mark.parametrize("receiver", ["none", "no-station"])
def test_a_relay_that_carried_nothing_is_failed_and_the_next_program_plays_on_time(
        tmp_path: Path, receiver: str) -> None:
    """No receiver (fm.backend: none): ``sdr_missing``; a receiver tuned where nothing is
    heard: ``fm_signal_lost``, which ends with the relay. Either way the report does not
    claim the relay and the media program after it starts on its second. (A dongle that
    does not answer is ``sdr_missing`` in the tuner: tests/unit/test_fm_tuner.py.)"""
    sim = Scenario(tmp_path, has_tuner=receiver != "none")
    mhz, code = (100.0, "sdr_missing") if receiver == "none" else (101.0, "fm_signal_lost")
    sim.do(ev.Publish((fm_program("p-fm", mhz, LEAD_S, 3),
                       {"id": "p-media", "title": "t", "priority": "scheduled",
                        "start": LEAD_S + 3, "source": {"type": "media", "items": ["m0"]}}),
                      frozenset(), False))
    start = sim.world.clock.now() + LEAD_S
    sim.until(lambda: sim.fault(code), LEAD_S + 2, code)
    [relay] = sim.until(lambda: sim.plays("p-fm"), 5, "the relay's report")
    assert (relay["outcome"], relay["frequency_mhz"]) == ("failed", mhz)
    assert sim.loud_s("p-fm") == 0.0
    [played] = sim.until(lambda: sim.plays("p-media"), 10, "the media program's report")
    assert (played["outcome"], epoch(played["started_at"])) == ("completed", start + 3)
    if receiver == "no-station":
        assert sim.boot.faults.active() == []  # the relay it described is over
    sim.end()


def stream_on_air(sim: Scenario) -> bool:
    playing = sim.on_air("p-live")
    return playing is not None and playing["source"] == "stream"


def start_on_stream(sim: Scenario, fallback: bool) -> float:
    """A live stream program starting in LEAD_S; the time its first sample aired."""
    sim.do(ev.Publish(({"id": "p-live", "title": "t", "priority": "live", "start": LEAD_S,
                        "source": {"type": "stream", "url": STREAM}, "duration_s": 120},),
                      frozenset(), fallback))
    playing = sim.until(lambda: sim.on_air("p-live"), LEAD_S + 2, "the stream program on air")
    return epoch(playing["started_at"])


def recovers(sim: Scenario) -> None:
    """The stream comes back: the fault clears within a probe, the stream is on air."""
    sim.do(ev.StreamGoes(STREAM, "up"))
    sim.until(lambda: sim.fault("stream_unavailable") is None, PROBE_S + 2,
              "stream_unavailable cleared")
    assert stream_on_air(sim)
    loud_before = sim.loud_s("p-live")
    sim.wait(2.0)
    assert sim.loud_s("p-live") >= loud_before + 1.5


def test_dead_stream_without_a_tuner_is_silence_and_a_fault(tmp_path: Path) -> None:
    sim = Scenario(tmp_path, has_tuner=False)
    start_on_stream(sim, fallback=False)
    sim.wait(2.0)
    sim.do(ev.StreamGoes(STREAM, "down"))
    broken_at = sim.world.clock.now()
    fault = sim.until(lambda: sim.fault("stream_unavailable"), SETTINGS.dead_air_s,
                      "stream_unavailable")
    # dead once its decoder ran dry, not after dead_air_s of quiet
    assert fault.since - broken_at < SETTINGS.dead_air_s and fault.message.endswith("ended")
    playing = sim.on_air("p-live")
    assert playing is not None and playing["priority"] == "live"
    loud_before = sim.loud_s("p-live")
    sim.wait(3.0)
    assert sim.loud_s("p-live") == loud_before  # silence: nothing to fall back to
    recovers(sim)
    sim.end()


def test_stream_silent_from_its_start_is_dead_air_counted_from_the_start(
        tmp_path: Path) -> None:
    sim = Scenario(tmp_path)
    sim.do(ev.StreamGoes(STREAM, "silent"))  # connects and sends frames, of silence
    on_air = start_on_stream(sim, fallback=True)
    fault = sim.until(lambda: sim.fault("stream_unavailable"), SETTINGS.dead_air_s + 5,
                      "stream_unavailable")
    # pre-rolled before its start, it is judged from when it went on air
    assert SETTINGS.dead_air_s <= fault.since - on_air <= SETTINGS.dead_air_s + 1.0
    playing = sim.on_air("p-live")
    assert playing is not None and (playing["source"], playing["frequency_mhz"]) == (
        "fm", FALLBACK_MHZ)
    sim.wait(2.0)
    assert ("fallback:p-live", 0) in sim.aired()
    recovers(sim)
    [fallback] = [r for r in sim.plays("p-live") if r["source"] == "fm"]
    assert (fallback["priority"], fallback["frequency_mhz"]) == ("live", FALLBACK_MHZ)
    sim.end()
