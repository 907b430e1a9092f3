"""The priority arbiter, transition by transition (source-api.md Schedule, mqtt.md commands).

Every test drives a real ``Arbiter`` with facts and checks the exact actions it returns.
Times are plain Unix seconds; the arbiter has no clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import permutations

import pytest

from agent.core.arbiter import Action, Activation, Arbiter, Item, SourceKind, StartItem, StopItem
from agent.core.schedule import Priority

GRACE_S = 120.0


def activation(key: str, start: float, *, priority: Priority = "scheduled",
               kind: SourceKind = "media", durations: Sequence[float | None] = (600.0,),
               end: float | None = None, chime: bool = False) -> Activation:
    items = tuple(Item(kind, f"{key}-{index}", duration)
                  for index, duration in enumerate(durations))
    return Activation(key=key, program_id=key, title=key, priority=priority, items=items,
                      start=start, end=end, chime=chime)


def live(key: str, start: float, end: float, *, priority: Priority = "live",
         kind: SourceKind = "stream") -> Activation:
    return activation(key, start, priority=priority, kind=kind, durations=(None,), end=end)


def playing_from_start(a: Activation, arbiter: Arbiter | None = None) -> Arbiter:
    """An arbiter on which ``a`` was added ahead of time and started at its window start."""
    arbiter = arbiter or Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(a, now=a.start)
    assert arbiter.evaluate(a.start) == [StartItem(a.key, 0, 0.0, a.start, a.chime)]
    return arbiter


# --- idle -> start ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["media", "tts", "stream", "fm"])
@pytest.mark.parametrize("chime", [False, True], ids=["no-chime", "chime"])
def test_idle_arbiter_starts_a_fresh_program_exactly_at_its_window_start(
        kind: SourceKind, chime: bool) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    program = activation("p", 1000.0, kind=kind, end=2000.0, chime=chime)
    arbiter.add(program, now=900.0)

    assert arbiter.evaluate(999.5) == []
    assert arbiter.preview(1000.0) == [StartItem("p", 0, 0.0, 1000.0, chime)]
    assert arbiter.evaluate(1000.0) == [StartItem("p", 0, 0.0, 1000.0, chime)]
    assert arbiter.playing == ("p", 0)
    assert arbiter.evaluate(1500.0) == []


# --- priorities --------------------------------------------------------------------------

@pytest.mark.parametrize(("first", "second", "second_preempts"), [
    pytest.param("scheduled", "live", True, id="live-preempts-scheduled"),
    pytest.param("scheduled", "emergency", True, id="emergency-preempts-scheduled"),
    pytest.param("live", "emergency", True, id="emergency-preempts-live"),
    pytest.param("scheduled", "scheduled", True, id="newer-scheduled-preempts-older"),
    pytest.param("live", "live", True, id="newer-live-preempts-older"),
    pytest.param("emergency", "emergency", True, id="newer-emergency-preempts-older"),
    pytest.param("live", "scheduled", False, id="scheduled-waits-under-live"),
    pytest.param("emergency", "scheduled", False, id="scheduled-waits-under-emergency"),
    pytest.param("emergency", "live", False, id="live-waits-under-emergency"),
    pytest.param("scheduled", "priority", True, id="priority-preempts-scheduled"),
    pytest.param("priority", "live", True, id="live-preempts-priority"),
    pytest.param("priority", "emergency", True, id="emergency-preempts-priority"),
    pytest.param("priority", "priority", True, id="newer-priority-preempts-older"),
    pytest.param("priority", "scheduled", False, id="scheduled-waits-under-priority"),
    pytest.param("live", "priority", False, id="priority-waits-under-live"),
    pytest.param("emergency", "priority", False, id="priority-waits-under-emergency"),
])
def test_a_newcomer_preempts_only_what_does_not_outrank_it(
        first: Priority, second: Priority, second_preempts: bool) -> None:
    arbiter = playing_from_start(activation("a", 0.0, priority=first))
    arbiter.add(activation("b", 100.0, priority=second, durations=(60.0,), chime=True), 100.0)

    actions = arbiter.evaluate(100.0)

    if second_preempts:
        assert actions == [StopItem("a", 0, "preempted"), StartItem("b", 0, 0.0, 100.0, True)]
        assert arbiter.playing == ("b", 0)
    else:
        assert actions == []
        assert arbiter.playing == ("a", 0)


@pytest.mark.parametrize("arrival",
                         list(permutations(["scheduled", "priority", "live", "emergency"])),
                         ids=lambda order: "-then-".join(order))
def test_highest_priority_wins_whatever_the_order_of_arrival(arrival: tuple[Priority, ...]) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    for priority in arrival:
        arbiter.add(activation(priority, 50.0, priority=priority), now=0.0)

    assert arbiter.evaluate(50.0) == [StartItem("emergency", 0, 0.0, 50.0, False)]


@pytest.mark.parametrize("newest_added_first", [True, False],
                         ids=["newest-added-first", "newest-added-last"])
def test_among_equals_the_newest_start_wins(newest_added_first: bool) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    older, newer = activation("older", 10.0), activation("newer", 20.0)
    for a in ([newer, older] if newest_added_first else [older, newer]):
        arbiter.add(a, now=0.0)

    assert arbiter.evaluate(10.0) == [StartItem("older", 0, 0.0, 10.0, False)]
    assert arbiter.evaluate(20.0) == [StopItem("older", 0, "preempted"),
                                      StartItem("newer", 0, 0.0, 20.0, False)]


def test_emergency_command_preempts_at_once_with_its_chime() -> None:
    arbiter = playing_from_start(live("relay", 0.0, 3600.0, kind="fm"))
    emergency = activation("cmd-1", 42.5, priority="emergency", durations=(30.0,) * 3,
                           chime=True)
    arbiter.add(emergency, now=42.5)

    assert arbiter.evaluate(42.5) == [StopItem("relay", 0, "preempted"),
                                      StartItem("cmd-1", 0, 0.0, 42.5, True)]


# --- preemption ends ---------------------------------------------------------------------

def test_priority_bulletin_preempts_scheduled_yields_to_live_and_each_restarts_its_item(
        ) -> None:
    """Circular 39's classes stacked: an ordinary programme, a priority bulletin over it, a
    live relay over both. As each ends, the one below restarts its interrupted item."""
    scheduled = activation("ordinary", 0.0, durations=(100.0, 100.0, 100.0), end=3000.0)
    arbiter = playing_from_start(scheduled)
    arbiter.item_ended("ordinary", 0, "completed")
    assert arbiter.evaluate(100.0) == [StartItem("ordinary", 1, 0.0, None, False)]

    arbiter.add(activation("bulletin", 150.0, priority="priority", durations=(60.0, 60.0),
                           chime=True), now=140.0)
    assert arbiter.evaluate(150.0) == [StopItem("ordinary", 1, "preempted"),
                                       StartItem("bulletin", 0, 0.0, 150.0, True)]
    arbiter.item_ended("bulletin", 0, "completed")
    assert arbiter.evaluate(210.0) == [StartItem("bulletin", 1, 0.0, None, False)]

    arbiter.add(live("district", 230.0, 300.0), now=230.0)
    assert arbiter.evaluate(230.0) == [StopItem("bulletin", 1, "preempted"),
                                       StartItem("district", 0, 0.0, 230.0, False)]

    assert arbiter.evaluate(300.0) == [StopItem("district", 0, "completed"),
                                       StartItem("bulletin", 1, 0.0, None, False)]
    arbiter.item_ended("bulletin", 1, "completed")
    assert arbiter.evaluate(360.0) == [StartItem("ordinary", 1, 0.0, None, False)]
    assert arbiter.playing == ("ordinary", 1)


@pytest.mark.parametrize(("kind", "window_end", "preemption_end", "resumes"), [
    pytest.param("media", 1000.0, 500.0, True, id="media-window-still-open-restarts-item"),
    pytest.param("tts", 1000.0, 500.0, True, id="tts-window-still-open-restarts-item"),
    pytest.param("media", None, 90_000.0, True, id="media-open-window-resumes-after-a-day"),
    pytest.param("tts", None, 90_000.0, True, id="tts-open-window-resumes-after-a-day"),
    pytest.param("stream", 1000.0, 500.0, True, id="stream-rejoins-live"),
    pytest.param("fm", 1000.0, 999.0, True, id="fm-rejoins-live-just-before-end"),
    pytest.param("media", 1000.0, 1000.0, False, id="media-window-closed-at-preemption-end"),
    pytest.param("media", 1000.0, 1500.0, False, id="media-window-closed-during-preemption"),
    pytest.param("stream", 1000.0, 1500.0, False, id="stream-window-closed-during-preemption"),
])
def test_preempted_program_when_the_preemption_ends(
        kind: SourceKind, window_end: float | None, preemption_end: float,
        resumes: bool) -> None:
    durations: tuple[float | None, ...] = (None,) if kind in ("stream", "fm") else (600.0,)
    program = activation("p", 0.0, kind=kind, durations=durations, end=window_end, chime=True)
    arbiter = playing_from_start(program)
    arbiter.add(activation("e", 100.0, priority="emergency"), now=100.0)
    assert arbiter.evaluate(100.0) == [StopItem("p", 0, "preempted"),
                                       StartItem("e", 0, 0.0, 100.0, False)]

    arbiter.item_ended("e", 0, "completed")
    actions = arbiter.evaluate(preemption_end)

    if resumes:
        assert actions == [StartItem("p", 0, 0.0, None, False)]
    else:
        assert actions == []
        assert arbiter.evaluate(preemption_end + 10.0) == []
        arbiter.add(program, now=preemption_end + 20.0)
        assert arbiter.evaluate(preemption_end + 20.0) == []


@pytest.mark.parametrize("late_join", [False, True], ids=["on-time", "joined-late-mid-item"])
def test_preempted_item_restarts_from_its_beginning_at_the_same_index(late_join: bool) -> None:
    program = activation("p", 0.0, durations=(100.0, 100.0, 100.0), end=1000.0)
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    if late_join:
        arbiter.add(program, now=150.0)
        assert arbiter.evaluate(150.0) == [StartItem("p", 1, 50.0, None, False)]
    else:
        playing_from_start(program, arbiter)
        arbiter.item_ended("p", 0, "completed")
        assert arbiter.evaluate(100.0) == [StartItem("p", 1, 0.0, None, False)]
    arbiter.add(live("l", 160.0, 300.0), now=160.0)
    assert arbiter.evaluate(160.0) == [StopItem("p", 1, "preempted"),
                                       StartItem("l", 0, 0.0, 160.0, False)]

    assert arbiter.evaluate(300.0) == [StopItem("l", 0, "completed"),
                                       StartItem("p", 1, 0.0, None, False)]


# --- window ends and early finishes ------------------------------------------------------

@pytest.mark.parametrize("something_waits", [False, True], ids=["nothing-waits", "older-waits"])
def test_fixed_window_end_cuts_the_playing_item_as_completed(something_waits: bool) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    if something_waits:
        playing_from_start(activation("older", -10.0, end=2000.0), arbiter)
    arbiter.add(activation("p", 0.0, durations=(600.0,), end=100.0), now=0.0)
    arbiter.evaluate(0.0)
    assert arbiter.playing == ("p", 0)

    assert arbiter.evaluate(99.9) == []
    after_cut = [StartItem("older", 0, 0.0, None, False)] if something_waits else []
    assert arbiter.evaluate(100.0) == [StopItem("p", 0, "completed"), *after_cut]


@pytest.mark.parametrize("something_waits", [False, True], ids=["nothing-waits", "older-waits"])
def test_items_finishing_early_leave_the_rest_of_the_window_without_looping(
        something_waits: bool) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    if something_waits:
        playing_from_start(activation("older", -10.0, end=2000.0), arbiter)
    arbiter.add(activation("p", 0.0, durations=(10.0, 10.0), end=1000.0), now=0.0)
    arbiter.evaluate(0.0)

    arbiter.item_ended("p", 0, "completed")
    assert arbiter.evaluate(10.0) == [StartItem("p", 1, 0.0, None, False)]
    arbiter.item_ended("p", 1, "completed")
    after = [StartItem("older", 0, 0.0, None, False)] if something_waits else []
    assert arbiter.evaluate(20.0) == after
    assert arbiter.evaluate(500.0) == []
    assert "p" not in {a.key for a in arbiter.pending()}


@pytest.mark.parametrize("repeat", [1, 2, 5])
def test_repeat_expanded_items_play_in_order_and_then_the_program_is_over(repeat: int) -> None:
    program = activation("p", 0.0, durations=(30.0, 45.0) * repeat)
    arbiter = playing_from_start(program)
    now = 0.0
    for index, item in enumerate(program.items[:-1]):
        assert item.duration_s is not None
        now += item.duration_s
        arbiter.item_ended("p", index, "completed")
        assert arbiter.evaluate(now) == [StartItem("p", index + 1, 0.0, None, False)]
    arbiter.item_ended("p", len(program.items) - 1, "completed")
    assert arbiter.evaluate(now + 45.0) == []
    assert arbiter.playing is None
    assert arbiter.pending() == []


def test_a_failed_item_moves_on_to_the_next_one() -> None:
    arbiter = playing_from_start(activation("p", 0.0, durations=(30.0, 30.0)))
    arbiter.item_ended("p", 0, "failed")
    assert arbiter.evaluate(1.0) == [StartItem("p", 1, 0.0, None, False)]


# --- late starts ---------------------------------------------------------------------------

START = 10_000.0


@pytest.mark.parametrize(("kind", "durations", "late_s", "expected"), [
    pytest.param("media", (100.0, 100.0), 60.0, (0, 0.0), id="media-within-grace-from-beginning"),
    pytest.param("media", (100.0, 100.0), GRACE_S, (0, 0.0), id="media-at-grace-from-beginning"),
    pytest.param("media", (300.0, 100.0), 130.0, (0, 130.0), id="media-beyond-grace-mid-item-0"),
    pytest.param("media", (100.0, 100.0), 130.0, (1, 30.0), id="media-beyond-grace-mid-item-1"),
    pytest.param("media", (100.0, 50.0, 100.0), 150.0, (2, 0.0),
                 id="media-beyond-grace-item-boundary"),
    pytest.param("media", (100.0, 100.0), 200.0, None, id="media-all-items-just-past-is-over"),
    pytest.param("media", (100.0, 100.0), 5000.0, None, id="media-all-items-long-past-is-over"),
    pytest.param("media", (None, 100.0), 60.0, (0, 0.0),
                 id="media-unknown-duration-within-grace-from-start"),
    pytest.param("media", (None, 100.0), 500.0, None, id="media-unknown-duration-late-skipped"),
    pytest.param("stream", (None,), 600.0, (0, 0.0), id="stream-joins-immediately"),
    pytest.param("fm", (None,), 600.0, (0, 0.0), id="fm-joins-immediately"),
    pytest.param("stream", (None,), 60.0, (0, 0.0), id="stream-within-grace"),
])
def test_late_start(kind: SourceKind, durations: tuple[float | None, ...], late_s: float,
                    expected: tuple[int, float] | None) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    program = activation("p", START, kind=kind, durations=durations, end=START + 3600.0,
                         chime=True)
    now = START + late_s
    arbiter.add(program, now=now)

    actions = arbiter.evaluate(now)

    if expected is None:
        assert actions == []
        assert arbiter.pending() == []
        arbiter.add(program, now=now + 1.0)
        assert arbiter.evaluate(now + 1.0) == []
        return
    index, offset = expected
    from_beginning = (index, offset) == (0, 0.0)
    assert actions == [StartItem("p", index, offset, START if from_beginning else None, True)]


# --- stop and remove ----------------------------------------------------------------------

def scheduled_under_two_emergencies() -> Arbiter:
    """``s`` plays from 0; emergency ``e1`` preempts it at 100 and ``e2`` preempts ``e1`` at
    200; ``s`` and ``e1`` wait."""
    arbiter = playing_from_start(activation("s", 0.0, durations=(600.0,), end=5000.0))
    arbiter.add(activation("e1", 100.0, priority="emergency"), now=100.0)
    arbiter.evaluate(100.0)
    arbiter.add(activation("e2", 200.0, priority="emergency"), now=200.0)
    assert arbiter.evaluate(200.0) == [StopItem("e1", 0, "preempted"),
                                       StartItem("e2", 0, 0.0, 200.0, False)]
    return arbiter


RESUME_S = StartItem("s", 0, 0.0, None, False)
RESUME_E1 = StartItem("e1", 0, 0.0, None, False)


@pytest.mark.parametrize(("priority", "ended", "then", "as_each_ends"), [
    pytest.param(None, {"e2"}, [StopItem("e2", 0, "stopped"), RESUME_E1], [[RESUME_S]],
                 id="default-stops-only-what-plays"),
    pytest.param("emergency", {"e1", "e2"}, [StopItem("e2", 0, "stopped"), RESUME_S], [[]],
                 id="emergency-stops-waiting-emergencies-too-scheduled-resumes"),
    pytest.param("scheduled", {"s"}, [], [[RESUME_E1], []],
                 id="scheduled-stops-the-waiting-scheduled"),
    pytest.param("live", set(), [], [[RESUME_E1], [RESUME_S]],
                 id="live-with-nothing-live-stops-nothing"),
])
def test_stop_command(priority: Priority | None, ended: set[str], then: list[Action],
                      as_each_ends: list[list[Action]]) -> None:
    arbiter = scheduled_under_two_emergencies()

    assert set(arbiter.stop(priority, now=250.0)) == ended
    assert arbiter.evaluate(250.0) == then
    now = 250.0
    for expected in as_each_ends:
        assert arbiter.playing is not None
        now += 10.0
        arbiter.item_ended(*arbiter.playing, "completed")
        assert arbiter.evaluate(now) == expected
    assert {a.key for a in arbiter.pending()}.isdisjoint(ended)


@pytest.mark.parametrize("priority", [None, "scheduled"], ids=["default", "same-priority"])
def test_stop_never_ends_a_program_still_to_come(priority: Priority | None) -> None:
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(activation("later", 100.0), now=0.0)

    assert arbiter.stop(priority, now=0.0) == []
    assert arbiter.evaluate(0.0) == []
    assert arbiter.evaluate(100.0) == [StartItem("later", 0, 0.0, 100.0, False)]


@pytest.mark.parametrize(("removed", "returned", "then"), [
    pytest.param("e", [StopItem("e", 0, "stopped")], [StartItem("s", 0, 0.0, None, False)],
                 id="playing-is-stopped-and-the-one-below-resumes"),
    pytest.param("s", [], [], id="waiting-is-dropped-silently"),
    pytest.param("nope", [], [], id="unknown-key-is-a-no-op"),
])
def test_remove(removed: str, returned: list[Action], then: list[Action]) -> None:
    arbiter = playing_from_start(activation("s", 0.0, end=5000.0))
    arbiter.add(activation("e", 100.0, priority="emergency"), now=100.0)
    arbiter.evaluate(100.0)

    assert arbiter.remove(removed) == returned
    assert arbiter.evaluate(150.0) == then
    if removed == "s":
        arbiter.item_ended("e", 0, "completed")
        assert arbiter.evaluate(700.0) == []


# --- re-adding, chime, stale facts -------------------------------------------------------

def finish_by_items(arbiter: Arbiter, program: Activation) -> float:
    playing_from_start(program, arbiter)
    arbiter.item_ended(program.key, 0, "completed")
    arbiter.evaluate(60.0)
    return 60.0


def finish_by_window(arbiter: Arbiter, program: Activation) -> float:
    playing_from_start(program, arbiter)
    assert arbiter.evaluate(100.0) == [StopItem(program.key, 0, "completed")]
    return 100.0


def finish_by_stop(arbiter: Arbiter, program: Activation) -> float:
    playing_from_start(program, arbiter)
    arbiter.stop(None, now=30.0)
    assert arbiter.evaluate(30.0) == [StopItem(program.key, 0, "stopped")]
    return 30.0


def finish_by_late_add(arbiter: Arbiter, program: Activation) -> float:
    arbiter.add(program, now=90.0)  # 90 s late: past its single 60 s item
    assert arbiter.evaluate(90.0) == []
    return 90.0


@pytest.mark.parametrize("finish", [finish_by_items, finish_by_window, finish_by_stop,
                                    finish_by_late_add],
                         ids=["items-played", "window-closed", "stopped", "late-past-all-items"])
def test_a_finished_activation_re_added_every_tick_is_ignored(
        finish: Callable[[Arbiter, Activation], float]) -> None:
    arbiter = Arbiter(late_start_grace_s=30.0)
    program = activation("p@0", 0.0, durations=(60.0,), end=100.0)
    now = finish(arbiter, program)

    for tick in range(5):
        arbiter.add(program, now=now + tick)
        assert arbiter.evaluate(now + tick) == []
    assert arbiter.playing is None


def test_chime_only_on_the_first_start_of_an_activation() -> None:
    arbiter = playing_from_start(activation("p", 0.0, durations=(60.0, 60.0), chime=True))
    arbiter.add(activation("e", 10.0, priority="emergency", durations=(5.0,)), now=10.0)
    arbiter.evaluate(10.0)
    arbiter.item_ended("e", 0, "completed")

    assert arbiter.evaluate(15.0) == [StartItem("p", 0, 0.0, None, False)]
    arbiter.item_ended("p", 0, "completed")
    assert arbiter.evaluate(75.0) == [StartItem("p", 1, 0.0, None, False)]


@pytest.mark.parametrize(("key", "index"), [
    pytest.param("p", 0, id="duplicate-report-of-the-previous-item"),
    pytest.param("p", 2, id="report-of-an-item-not-yet-started"),
    pytest.param("ghost", 0, id="unknown-key"),
])
def test_item_ended_for_a_stale_item_is_ignored(key: str, index: int) -> None:
    arbiter = playing_from_start(activation("p", 0.0, durations=(60.0, 60.0, 60.0)))
    arbiter.item_ended("p", 0, "completed")
    assert arbiter.evaluate(60.0) == [StartItem("p", 1, 0.0, None, False)]

    arbiter.item_ended(key, index, "completed")

    assert arbiter.playing == ("p", 1)
    assert arbiter.evaluate(61.0) == []
    arbiter.item_ended("p", 1, "completed")
    assert arbiter.evaluate(120.0) == [StartItem("p", 2, 0.0, None, False)]


# --- look-aheads --------------------------------------------------------------------------

def busy_arbiter() -> Arbiter:
    """``s`` plays item 1 of 3 in a fixed window; a live relay starts at 300 and an
    emergency is queued for 400."""
    arbiter = playing_from_start(activation("s", 0.0, durations=(100.0,) * 3, end=1000.0,
                                            chime=True))
    arbiter.item_ended("s", 0, "completed")
    arbiter.evaluate(100.0)
    arbiter.add(live("l", 300.0, 350.0, kind="fm"), now=150.0)
    arbiter.add(activation("e", 400.0, priority="emergency", durations=(20.0,)), now=150.0)
    return arbiter


def test_preview_and_preview_after_item_do_not_change_state() -> None:
    looked_at, untouched = busy_arbiter(), busy_arbiter()
    for at in (150.0, 200.0, 300.0, 400.0, 1000.0):
        looked_at.preview(at)
        looked_at.preview_after_item("s", 1, at)
        looked_at.preview_after_item("s", 0, at)

    for at in (150.0, 200.0, 299.0, 300.0, 350.0, 400.0, 420.0, 1000.0):
        assert looked_at.preview(at) == untouched.preview(at)
        assert looked_at.evaluate(at) == untouched.evaluate(at)
        assert looked_at.playing == untouched.playing
        if looked_at.playing is not None:
            key, index = looked_at.playing
            looked_at.item_ended(key, index, "completed")
            untouched.item_ended(key, index, "completed")


@pytest.mark.parametrize("at", [150.0, 200.0, 300.0, 400.0, 1000.0])
def test_preview_foretells_evaluate(at: float) -> None:
    previewed = busy_arbiter().preview(at)
    assert previewed == busy_arbiter().evaluate(at)


@pytest.mark.parametrize(("at", "expected"), [
    pytest.param(200.0, [StartItem("s", 2, 0.0, None, False)], id="next-item-of-same-program"),
    pytest.param(300.0, [StartItem("l", 0, 0.0, 300.0, False)], id="relay-takes-over"),
    pytest.param(400.0, [StartItem("e", 0, 0.0, 400.0, False)], id="emergency-takes-over"),
])
def test_preview_after_item_foretells_the_gapless_follow_up(at: float,
                                                            expected: list[Action]) -> None:
    arbiter = busy_arbiter()
    assert arbiter.preview_after_item("s", 1, at) == expected
    arbiter.item_ended("s", 1, "completed")
    assert arbiter.evaluate(at) == expected


# --- regressions: both failed before arbiter fix dcccdb0 ------------------------------------

def test_a_late_joined_program_that_first_waits_restarts_its_item_from_the_beginning() -> None:
    """Booting at 300 into a live relay (200-1200) above a scheduled program (0, open window,
    one 600 s item): had the agent been up, the program would have been preempted at 200 and
    would restart its item at 1200. Its late-join position (300 s in) is stale by then."""
    arbiter = Arbiter(late_start_grace_s=GRACE_S)
    arbiter.add(activation("s", 0.0, durations=(600.0,)), now=300.0)
    arbiter.add(live("l", 200.0, 1200.0), now=300.0)
    assert arbiter.evaluate(300.0) == [StartItem("l", 0, 0.0, 200.0, False)]

    actions = arbiter.evaluate(1200.0)

    # ``at`` keeps the planned start (long past): the executor starts it at once.
    assert actions == [StopItem("l", 0, "completed"), StartItem("s", 0, 0.0, 0.0, False)]


def test_executor_reporting_the_preempted_item_does_not_skip_it() -> None:
    """The executor reports the end of every item it was told to start, also one it was told
    to stop (outcome ``preempted``): that item was interrupted, not played."""
    arbiter = playing_from_start(activation("s", 0.0, durations=(600.0,)))
    arbiter.add(activation("e", 100.0, priority="emergency", durations=(30.0,)), now=100.0)
    assert arbiter.evaluate(100.0)[0] == StopItem("s", 0, "preempted")
    arbiter.item_ended("s", 0, "preempted")
    arbiter.item_ended("e", 0, "completed")

    assert arbiter.evaluate(130.0) == [StartItem("s", 0, 0.0, None, False)]
