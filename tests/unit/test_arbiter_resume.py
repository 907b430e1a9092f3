"""The arbiter after a restart: what already aired (the durable play journal) never airs
again; what was preempted restarts its item; what a crash cut follows the late-start rules."""

from __future__ import annotations

import pytest

from agent.core.arbiter import Activation, AiredItem, Arbiter, Item, Outcome, StartItem, StopItem
from tests.unit.test_arbiter import GRACE_S, activation, live

START = 1000.0
ITEMS = (60.0, 60.0, 60.0)


def resumed(aired: dict[int, AiredItem], now: float, durations: tuple[float | None, ...]
            = ITEMS) -> Arbiter:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(activation("p", START, durations=durations, chime=True), now, aired)
    return arbiter


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_finished_last_item_means_the_occurrence_never_airs_again(outcome: Outcome) -> None:
    arbiter = resumed({0: AiredItem("completed", START), 1: AiredItem("completed", START + 60),
                       2: AiredItem(outcome, START + 120)}, now=START + 185)
    assert arbiter.evaluate(START + 185) == []
    assert arbiter.pending() == []


def test_an_occurrence_without_known_lengths_does_not_replay_within_the_grace() -> None:
    """The bug of the first version: a program whose media had no duration_s replayed at
    every restart, its window taken as lasting a day."""
    arbiter = resumed({0: AiredItem("completed", START)}, now=START + 30, durations=(None,))
    assert arbiter.evaluate(START + 30) == []
    assert arbiter.pending() == []


def test_finished_items_are_skipped_and_the_rest_plays_at_once_without_chime() -> None:
    arbiter = resumed({0: AiredItem("completed", START)}, now=START + 70)
    assert arbiter.evaluate(START + 70) == [StartItem("p", 1, 0.0, None, False)]


def test_a_preempted_item_restarts_from_its_beginning() -> None:
    arbiter = resumed({0: AiredItem("completed", START), 1: AiredItem("preempted", START + 60)},
                      now=START + 400)
    assert arbiter.evaluate(START + 400) == [StartItem("p", 1, 0.0, None, False)]


def test_a_stopped_occurrence_is_over() -> None:
    arbiter = resumed({0: AiredItem("stopped", START)}, now=START + 10)
    assert arbiter.evaluate(START + 10) == []


@pytest.mark.parametrize(("cut_after_s", "expected"), [
    (30.0, StartItem("p", 1, 0.0, None, False)),     # back within the grace: item again
    (150.0, StartItem("p", 1, 150.0, None, False)),  # later: joins where it would be...
    (230.0, StartItem("p", 2, 30.0, None, False)),   # ...in whichever item that is
    (300.0, None),                                   # later than its end: over
])
def test_an_item_cut_by_a_crash_follows_the_late_start_rules(
        cut_after_s: float, expected: StartItem | None) -> None:
    item_started = START + 60
    arbiter = resumed({0: AiredItem("completed", START), 1: AiredItem(None, item_started)},
                      now=item_started + cut_after_s, durations=(60.0, 200.0, 60.0))
    actions = arbiter.evaluate(item_started + cut_after_s)
    assert actions == ([] if expected is None else [expected])


def test_a_live_relay_cut_by_a_crash_rejoins_and_one_that_ended_does_not() -> None:
    cut = Arbiter(late_start_grace_s=GRACE_S)
    cut.add(live("fm", START, START + 600, kind="fm"), START + 300, {0: AiredItem(None, START)})
    assert cut.evaluate(START + 300) == [StartItem("fm", 0, 0.0, None, False)]

    ended = Arbiter(late_start_grace_s=GRACE_S)
    ended.add(live("fm", START, START + 600, kind="fm"), START + 300,
              {0: AiredItem("completed", START)})
    assert ended.evaluate(START + 300) == []


def test_a_repeat_gap_leaves_silence_between_repetitions_and_times_the_next_one() -> None:
    items = (Item("media", "a", 10.0), Item("media", "b", 5.0))
    program = Activation(key="p", program_id="p", title="p", priority="scheduled",
                         items=items * 3, start=START, items_per_repeat=2, repeat_gap_s=30.0)
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(program, START)
    assert arbiter.evaluate(START) == [StartItem("p", 0, 0.0, START, False)]
    arbiter.item_ended("p", 0, "completed", START + 10)
    assert arbiter.evaluate(START + 10) == [StartItem("p", 1, 0.0, None, False)]  # gapless
    assert arbiter.preview_after_item("p", 1, START + 15) == \
        [StartItem("p", 2, 0.0, START + 45, False)]
    arbiter.item_ended("p", 1, "completed", START + 15)
    assert arbiter.evaluate(START + 15) == []
    assert arbiter.next_boundary(START + 15) == START + 45
    assert arbiter.evaluate(START + 44.9) == []
    assert arbiter.evaluate(START + 45) == [StartItem("p", 2, 0.0, START + 45, False)]
    for index, ended in ((2, 55.0), (3, 60.0), (4, 100.0), (5, 105.0)):
        arbiter.item_ended("p", index, "completed", START + ended)
        arbiter.evaluate(START + ended + 30)
    assert arbiter.pending() == []  # no gap after the last repetition


def test_a_lower_program_may_play_in_a_repeat_gap() -> None:
    program = Activation(key="p", program_id="p", title="p", priority="priority",
                         items=(Item("media", "a", 10.0),) * 2, start=START,
                         items_per_repeat=1, repeat_gap_s=30.0)
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(program, START)
    arbiter.add(activation("low", START, durations=(600.0,)), START)
    assert arbiter.evaluate(START) == [StartItem("p", 0, 0.0, START, False)]
    arbiter.item_ended("p", 0, "completed", START + 10)
    assert arbiter.evaluate(START + 10) == [StartItem("low", 0, 0.0, START, False)]
    assert arbiter.evaluate(START + 40) == [StopItem("low", 0, "preempted"),
                                            StartItem("p", 1, 0.0, START + 40, False)]
