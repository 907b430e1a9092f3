"""Fault audio_dropouts from the card's underruns over time (agent.control.dropouts)."""

from __future__ import annotations

from agent.control.dropouts import CLEAR_AFTER_S, LIMIT_S, WINDOW_S, DropoutWatch


def feed(watch: DropoutWatch, ticks: list[tuple[float, float]]) -> list[str | None]:
    return [watch.update(now, total_s) for now, total_s in ticks]


def test_a_lone_short_gap_is_not_a_fault() -> None:
    watch = DropoutWatch()
    assert feed(watch, [(0.0, 0.0), (1.0, 0.015), (2.0, 0.015), (100.0, 0.015)]) == \
        [None, None, None, None]


def test_gaps_adding_up_within_the_window_raise_it_with_their_total() -> None:
    watch = DropoutWatch()
    messages = feed(watch, [(0.0, 0.04), (30.0, 0.08), (59.0, 0.12)])
    assert messages[:2] == [None, None]
    assert messages[2] is not None and "120 ms within 60 s" in messages[2]
    assert "0.12 s since the agent started" in messages[2]


def test_gaps_further_apart_than_the_window_do_not_add_up() -> None:
    watch = DropoutWatch()
    step = LIMIT_S * 0.6
    assert feed(watch, [(0.0, step), (WINDOW_S, 2 * step), (2 * WINDOW_S, 3 * step)]) == \
        [None, None, None]


def test_it_clears_only_after_a_quiet_spell_and_tells_the_worst_meanwhile() -> None:
    watch = DropoutWatch()
    raised_at = 10.0
    assert watch.update(raised_at, 0.25) is not None
    later = watch.update(raised_at + WINDOW_S + 1, 0.25)  # nothing new, still raised
    assert later is not None and "250 ms within 60 s" in later
    assert watch.update(raised_at + CLEAR_AFTER_S - 1, 0.25) is not None
    assert watch.update(raised_at + CLEAR_AFTER_S, 0.25) is None
    assert not watch.raised


def test_a_gap_during_the_quiet_spell_restarts_it() -> None:
    watch = DropoutWatch()
    assert watch.update(0.0, 0.2) is not None
    assert watch.update(200.0, 0.21) is not None  # 10 ms more: not enough to raise, but
    assert watch.update(CLEAR_AFTER_S + 1, 0.21) is not None  # the spell starts again
    assert watch.update(200.0 + CLEAR_AFTER_S, 0.21) is None
