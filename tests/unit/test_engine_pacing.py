"""How much the engine believes the card holds, which decides when it renders the next
period (agent.playout.aired.frames_ahead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.playout.aired import frames_ahead
from agent.playout.engine import PlayoutEngine
from drivers.audio.wav import ClockedWavSink

PERIOD = 480  # 10 ms at 48 kHz


def test_a_card_that_drains_smoothly_is_taken_at_its_count() -> None:
    assert frames_ahead(queued=700, ahead_by_clock=700, period=PERIOD) == 700


def test_between_the_steps_of_a_ticking_card_its_clock_counts() -> None:
    # 6 ms since the last tick: the count still holds those 288 frames.
    assert frames_ahead(queued=900, ahead_by_clock=612, period=PERIOD) == 612


def test_a_clock_far_behind_the_count_is_believed_one_period_at_most() -> None:
    assert frames_ahead(queued=900, ahead_by_clock=-48_000, period=PERIOD) == 900 - PERIOD


def test_a_clock_ahead_of_the_count_leaves_the_count_in_charge() -> None:
    assert frames_ahead(queued=900, ahead_by_clock=48_900, period=PERIOD) == 900


def test_a_buffer_of_one_period_or_less_is_refused(tmp_path: Path) -> None:
    sink = ClockedWavSink(tmp_path / "card.wav", 48_000)
    with pytest.raises(ValueError, match="cannot hold more than one period"):
        PlayoutEngine(sink, lambda _event: None, buffer_s=0.010, period_s=0.010)
