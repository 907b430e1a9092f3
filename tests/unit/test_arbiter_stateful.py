"""The arbiter under random sequences of facts, checked against an independent model.

The machine plays the executor: it applies every action the arbiter returns to its own
idea of what plays, and keeps its own record of each activation (next item, started,
finished) from the facts it fed in. After every ``evaluate`` the invariants of the
Schedule rules (source-api.md) must hold on that model, not on the arbiter's internals.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from agent.core.arbiter import (
    LIVE_KINDS,
    Action,
    Activation,
    Arbiter,
    Item,
    Outcome,
    SourceKind,
    StartItem,
    StopItem,
)
from agent.core.schedule import PRIORITY_RANK, Priority

GRACE_S = 5.0
PRIORITIES: tuple[Priority, ...] = ("scheduled", "live", "emergency")
KINDS: tuple[SourceKind, ...] = ("media", "stream", "fm", "tts")
OUTCOMES: tuple[Outcome, ...] = ("completed", "preempted", "stopped", "failed")
# Whole seconds keep the late-join arithmetic exact; 0 stands for an unknown duration.
durations_st = st.lists(st.integers(0, 30).map(lambda s: float(s) if s else None),
                        min_size=1, max_size=3)


@dataclass(frozen=True)
class Spec:
    """What to add, relative to the current time."""

    priority: Priority
    kind: SourceKind
    start_delta: int
    window_s: int | None
    durations: list[float | None]
    chime: bool


specs = st.builds(Spec, priority=st.sampled_from(PRIORITIES), kind=st.sampled_from(KINDS),
                  start_delta=st.integers(-60, 30),
                  window_s=st.one_of(st.none(), st.integers(1, 90)),
                  durations=durations_st, chime=st.booleans())
# A command (emergency, play_now, fm_relay) starts at once.
command_specs = st.builds(Spec, priority=st.sampled_from(PRIORITIES),
                          kind=st.sampled_from(KINDS), start_delta=st.just(0),
                          window_s=st.one_of(st.none(), st.integers(1, 60)),
                          durations=durations_st, chime=st.booleans())


@dataclass
class Tracked:
    """What the executor knows of one activation it was given."""

    activation: Activation
    next_index: int = 0
    # Where a late join enters the item. Outranked before its first start, it would have
    # been preempted had the agent been up: it then restarts the item from its beginning.
    late_offset_s: float = 0.0
    started: bool = False
    finished: bool = False  # played out, stopped, removed, or late past all its items

    def eligible(self, now: float) -> bool:
        a = self.activation
        return (not self.finished and a.start <= now
                and (a.end is None or now < a.end))


def rank(a: Activation) -> int:
    return PRIORITY_RANK[a.priority]


class ArbiterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.arbiter = Arbiter(late_start_grace_s=GRACE_S)
        self.now = 0.0
        self.tracked: dict[str, Tracked] = {}
        self.removed: set[str] = set()
        self.playing: tuple[str, int] | None = None
        self.stopped: set[str] = set()
        self.executor_reports_stops = False

    @initialize(reports=st.booleans())
    def executor_style(self, reports: bool) -> None:
        """Some executors report the end of every item, also those they were told to stop:
        such a report changes nothing (the item was interrupted, not played)."""
        self.executor_reports_stops = reports

    # --- facts -----------------------------------------------------------------------------
    @initialize(first=specs, second=specs)
    def two_activations(self, first: Spec, second: Spec) -> None:
        self.add(first, then_evaluate=False)
        self.add(second, then_evaluate=True)

    @rule(spec=specs, then_evaluate=st.booleans())
    def add(self, spec: Spec, then_evaluate: bool) -> None:
        durations, window_s = spec.durations, spec.window_s
        is_live = spec.kind in LIVE_KINDS
        if is_live:
            durations = [None]  # a stream or FM relay is one item lasting its window
            window_s = window_s or 30
        start = self.now + spec.start_delta
        key = f"a{len(self.tracked)}"
        items = tuple(Item(spec.kind, f"{key}-{i}", d) for i, d in enumerate(durations))
        a = Activation(key=key, program_id=key, title=key, priority=spec.priority, items=items,
                       start=start, end=None if window_s is None else start + window_s,
                       chime=spec.chime)
        tracked = Tracked(a)
        if self.now - start > GRACE_S and not is_live:
            if None in durations:
                tracked.finished = True  # where it would be is unknowable: skipped
            else:
                self._join_late(tracked, self.now - start)
        self.tracked[key] = tracked
        self.arbiter.add(a, self.now)
        if then_evaluate:
            self._evaluate()

    @rule(spec=command_specs)
    def command(self, spec: Spec) -> None:
        self.add(spec, then_evaluate=True)

    @staticmethod
    def _join_late(tracked: Tracked, late_s: float) -> None:
        item_start = 0.0
        for index, item in enumerate(tracked.activation.items):
            assert item.duration_s is not None
            if late_s < item_start + item.duration_s:
                tracked.next_index, tracked.late_offset_s = index, late_s - item_start
                return
            item_start += item.duration_s
        tracked.finished = True

    @rule(data=st.data())
    def re_add(self, data: st.DataObject) -> None:
        """The control loop re-adds every occurrence each tick: always a no-op."""
        kept = sorted(set(self.tracked) - self.removed)
        if kept:
            self.arbiter.add(self.tracked[data.draw(st.sampled_from(kept))].activation, self.now)

    @rule(outcome=st.sampled_from(["completed", "failed"]), then_evaluate=st.booleans())
    def item_ended(self, outcome: Outcome, then_evaluate: bool) -> None:
        if self.playing is None:
            return
        key, index = self.playing
        self.arbiter.item_ended(key, index, outcome)
        self.playing = None
        tracked = self.tracked[key]
        tracked.next_index += 1
        if tracked.activation.live or tracked.next_index == len(tracked.activation.items):
            tracked.finished = True
        if then_evaluate:
            self._evaluate()

    @rule(data=st.data())
    def stale_item_ended(self, data: st.DataObject) -> None:
        """A late duplicate report of an item that already ended changes nothing."""
        moved_on = sorted(k for k, t in self.tracked.items() if t.next_index > 0)
        if not moved_on:
            return
        key = data.draw(st.sampled_from(moved_on))
        stale = data.draw(st.integers(0, self.tracked[key].next_index - 1))
        self.arbiter.item_ended(key, stale, data.draw(st.sampled_from(OUTCOMES)))

    @rule(priority=st.one_of(st.none(), st.sampled_from(PRIORITIES)), then_evaluate=st.booleans())
    def stop(self, priority: Priority | None, then_evaluate: bool) -> None:
        ended = set(self.arbiter.stop(priority, self.now))
        if priority is None:
            expected = set() if self.playing is None else {self.playing[0]}
            assert ended == expected
        else:
            expected = {k for k, t in self.tracked.items()
                        if t.activation.priority == priority and t.eligible(self.now)}
            assert expected <= ended
            assert all(self.tracked[k].activation.priority == priority
                       and self.tracked[k].activation.start <= self.now
                       and k not in self.removed for k in ended)
        for key in ended:
            self.tracked[key].finished = True
        self.stopped |= ended
        if then_evaluate:
            self._evaluate()

    @rule(data=st.data(), then_evaluate=st.booleans())
    def remove(self, data: st.DataObject, then_evaluate: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.tracked)))
        actions = self.arbiter.remove(key)
        if self.playing is not None and self.playing[0] == key:
            assert actions == [StopItem(key, self.playing[1], "stopped")]
            self.playing = None
        else:
            assert actions == []
        self.tracked[key].finished = True
        self.removed.add(key)
        if then_evaluate:
            self._evaluate()

    # --- decisions ---------------------------------------------------------------------------
    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0]),
          look_ahead=st.sampled_from([0.0, 1.0, 10.0]))
    def tick(self, dt: float, look_ahead: float) -> None:
        """The control loop wakes: time passed, it looks ahead (cueing), then evaluates."""
        self.now += dt
        self.arbiter.preview(self.now + look_ahead)
        if self.playing is not None:
            self.arbiter.preview_after_item(*self.playing, self.now + look_ahead)
        self._evaluate()

    def _evaluate(self) -> None:
        foretold = self.arbiter.preview(self.now)
        actions = self.arbiter.evaluate(self.now)
        assert actions == foretold
        self._apply(actions)
        self._check_what_plays()
        for waiting in self.tracked.values():
            if not waiting.started:
                waiting.late_offset_s = 0.0
        if self.executor_reports_stops:
            for stop in (a for a in actions if isinstance(a, StopItem)):
                self.arbiter.item_ended(stop.key, stop.index, stop.outcome)

    def _apply(self, actions: list[Action]) -> None:
        stops = [a for a in actions if isinstance(a, StopItem)]
        starts = [a for a in actions if isinstance(a, StartItem)]
        assert actions == [*stops, *starts], "stops come before the start"
        assert len(stops) <= 1 and len(starts) <= 1
        for stop in stops:
            self._apply_stop(stop, starts)
        for start in starts:
            self._apply_start(start)

    def _apply_stop(self, stop: StopItem, starts: list[StartItem]) -> None:
        assert (stop.key, stop.index) == self.playing, "a stop must name what plays"
        assert stop.outcome in OUTCOMES
        stopped = self.tracked[stop.key].activation
        if stop.outcome == "preempted":
            assert starts, "preempted with nothing starting"
            winner = self.tracked[starts[0].key].activation
            assert winner.key != stop.key and rank(winner) >= rank(stopped)
        elif stop.outcome == "completed":
            assert stopped.end is not None and self.now >= stopped.end, "cut before its end"
        elif stop.outcome == "stopped":
            assert stop.key in self.stopped
        else:
            raise AssertionError(f"the arbiter never decides an item failed: {stop}")
        self.playing = None

    def _apply_start(self, start: StartItem) -> None:
        assert self.playing is None, "two things would play at once"
        tracked = self.tracked[start.key]
        a = tracked.activation
        assert tracked.eligible(self.now), f"started {start.key} outside its window or finished"
        assert start.index == tracked.next_index
        if tracked.started or a.live:
            assert start.offset_s == 0.0, "a resumed item restarts from its beginning"
        else:
            assert start.offset_s == tracked.late_offset_s, "joined late at the wrong position"
        from_beginning = not tracked.started and start.index == 0 and start.offset_s == 0.0
        assert start.at == (a.start if from_beginning else None)
        assert start.chime == (a.chime and not tracked.started)
        tracked.started = True
        self.playing = (start.key, start.index)

    def _check_what_plays(self) -> None:
        eligible = [t.activation for t in self.tracked.values() if t.eligible(self.now)]
        if not eligible:
            assert self.playing is None, "plays something no longer eligible"
            return
        assert self.playing is not None, "silent while something eligible waits"
        playing = self.tracked[self.playing[0]]
        assert playing.eligible(self.now), "plays a finished activation or a closed window"
        top = max(rank(a) for a in eligible)
        assert rank(playing.activation) == top, "a lower priority plays over a higher one"
        newest = max(a.start for a in eligible if rank(a) == top)
        assert playing.activation.start == newest, "among equals the newest start must play"

    @invariant()
    def arbiter_agrees_on_what_plays(self) -> None:
        assert self.arbiter.playing == self.playing


TestArbiterStateMachine = ArbiterMachine.TestCase
TestArbiterStateMachine.settings = settings(max_examples=200, stateful_step_count=40,
                                            deadline=None)
