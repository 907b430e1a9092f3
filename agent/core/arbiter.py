"""The priority arbiter: the one place that decides what plays.

A pure state machine: no threads, no clock, no I/O. The control loop feeds it facts
(activations appear and disappear, time passes, an item ended) and carries out the actions
it returns. Rules (source-api.md, Schedule):

- At any instant the highest-priority activation inside its window plays; among equals,
  the one that started last.
- A preempted media/tts activation restarts its interrupted item from the beginning when
  it wins again, if its window is still open; a stream/fm activation rejoins live.
- A window with a fixed end cuts what still plays at its end (outcome ``completed``);
  an open window ends when its items have played.
- Starting late: within the grace a program starts from its beginning; later, a media
  program joins at the position it would have reached (or is skipped when its lengths are
  unknown), a live one joins immediately.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from agent.core.schedule import PRIORITY_RANK, Priority

SourceKind = Literal["media", "stream", "fm", "tts", "line_in"]
Outcome = Literal["completed", "preempted", "stopped", "failed"]
LIVE_KINDS = ("stream", "fm", "line_in")
# Finished activations are remembered this long so that re-adding them is a no-op.
_REMEMBER_S = 3 * 86400.0


@dataclass(frozen=True)
class Item:
    kind: SourceKind
    ref: str  # media id, stream URL, frequency in MHz, text, or "" (the line input)
    duration_s: float | None = None
    lang: str | None = None  # a text's language (its TTS voice)


@dataclass(frozen=True)
class Activation:
    """A program occurrence or a command that may play."""

    key: str
    program_id: str
    title: str
    priority: Priority
    items: tuple[Item, ...]
    start: float
    end: float | None = None  # fixed window end; None = over when the items have played
    volume: int | None = None  # program volume (scales master); None = 100
    absolute_volume: bool = False  # emergencies: volume is absolute, not scaled by master
    chime: bool = False
    # A program's items repeated: silence of repeat_gap_s after every items_per_repeat items.
    items_per_repeat: int = 0
    repeat_gap_s: float = 0.0

    @property
    def live(self) -> bool:
        return self.items[0].kind in LIVE_KINDS


@dataclass(frozen=True)
class AiredItem:
    """What already aired of one item of an activation (from the durable play journal):
    the outcome of its latest play (None: cut by a crash or power cut) and its first
    sample's time."""

    outcome: Outcome | None
    started_at: float


@dataclass(frozen=True)
class StartItem:
    key: str
    index: int
    offset_s: float  # position to join at within the item
    at: float | None  # planned wall time of the first sample; None = as soon as possible
    chime: bool


@dataclass(frozen=True)
class StopItem:
    key: str
    index: int
    outcome: Outcome


Action = StartItem | StopItem


@dataclass
class _Progress:
    activation: Activation
    seq: int
    next_index: int = 0
    offset_s: float = 0.0
    started: bool = False
    done: bool = False
    end_outcome: Outcome = "completed"  # outcome of the playing item when it is cut
    not_before: float | None = None  # the next item waits for a repeat gap until then


@dataclass
class Arbiter:
    late_start_grace_s: float = 120.0
    _progress: dict[str, _Progress] = field(default_factory=dict)
    _playing: tuple[str, int] | None = None
    _seq: int = 0
    _finished: dict[str, float] = field(default_factory=dict)  # key -> window start

    # --- facts -------------------------------------------------------------------------
    def add(self, activation: Activation, now: float,
            aired: Mapping[int, AiredItem] | None = None) -> None:
        """Make an activation eligible. Adding a key again is a no-op. ``aired`` is what
        already aired of it (before a restart): only what remains plays."""
        if self.knows(activation.key):
            return
        self._seq += 1
        progress = _Progress(activation, self._seq)
        self._progress[activation.key] = progress
        late = now - activation.start
        if aired:
            self._resume(progress, aired, now)
        elif late > self.late_start_grace_s and not activation.live:
            self._join_late(progress, late)

    def knows(self, key: str) -> bool:
        """The activation is eligible, or was and is over."""
        return key in self._progress or key in self._finished

    def remove(self, key: str) -> list[Action]:
        """The activation no longer exists (schedule changed). Stops it if it plays."""
        actions: list[Action] = []
        if self._playing is not None and self._playing[0] == key:
            actions.append(StopItem(key, self._playing[1], "stopped"))
            self._playing = None
        self._progress.pop(key, None)
        return actions

    def stop(self, priority: Priority | None, now: float) -> list[str]:
        """The ``stop`` command: ends what plays at ``priority`` (default: whatever plays),
        including activations of that priority waiting under a higher one. Returns the
        keys ended; a playing item among them ends with outcome ``stopped``."""
        if priority is None:
            targets = [] if self._playing is None else [self._progress[self._playing[0]]]
        else:
            targets = [p for p in self._progress.values()
                       if p.activation.priority == priority and p.activation.start <= now]
        for progress in targets:
            progress.done = True
            progress.end_outcome = "stopped"
        return [p.activation.key for p in targets]

    def item_ended(self, key: str, index: int, outcome: Outcome,
                   ended_at: float | None = None) -> None:
        """The executor finished (or failed) an item it was told to start; ``ended_at``
        (one past its last sample) times the repeat gap that may follow it."""
        progress = self._progress.get(key)
        if self._playing == (key, index):
            self._playing = None
        if progress is None or progress.next_index != index or outcome == "preempted":
            return  # a preempted item was interrupted, not played: it is played again
        progress.offset_s = 0.0
        if progress.activation.live:
            progress.done = True
            return
        progress.next_index += 1
        a = progress.activation
        if progress.next_index >= len(a.items):
            progress.done = True
        elif a.repeat_gap_s > 0 and ended_at is not None \
                and progress.next_index % a.items_per_repeat == 0:
            progress.not_before = ended_at + a.repeat_gap_s

    def clock_stepped(self, seconds: float, before: float, timed_at_receipt: set[str]
                      ) -> None:
        """The wall clock stepped by ``seconds`` (an NTP correction) when it read
        ``before``. What had started or was already due keeps its place in real time, and
        so do the keys in ``timed_at_receipt`` (commands: their ``start_at`` was read
        against the clock they arrived on): their windows move with the step, so what
        plays goes on and nothing airs twice. Scheduled programmes ahead keep their
        wall-clock time, and what the step skipped follows the late-start rules."""
        for progress in self._progress.values():
            a = progress.activation
            if progress.started or a.start <= before or a.key in timed_at_receipt:
                progress.activation = replace(
                    a, start=a.start + seconds, end=None if a.end is None else a.end + seconds)
                if progress.not_before is not None:
                    progress.not_before += seconds
        self._finished = {key: start + seconds for key, start in self._finished.items()}

    # --- decisions ---------------------------------------------------------------------
    def evaluate(self, now: float) -> list[Action]:
        """What must change at ``now``: stops first, then at most one start."""
        actions: list[Action] = []
        for progress in self._progress.values():
            end = progress.activation.end
            if end is not None and now >= end and not progress.done:
                progress.done = True
        if self._playing is not None:
            key, index = self._playing
            progress = self._progress[key]
            if progress.done:
                actions.append(StopItem(key, index, progress.end_outcome))
                self._playing = None
        winner = self._winner(now)
        for waiting in self._progress.values():
            if waiting is not winner and not waiting.started and waiting.offset_s:
                # Joined late but outranked: had the agent been up it would have been
                # preempted, so it restarts its item from the beginning when it plays.
                waiting.offset_s = 0.0
        if self._playing is not None and (winner is None or winner.activation.key
                                          != self._playing[0]):
            key, index = self._playing
            actions.append(StopItem(key, index, "preempted"))
            self._progress[key].offset_s = 0.0
            self._playing = None
        if winner is not None and self._playing is None:
            a = winner.activation
            first = not winner.started
            at = a.start if first and winner.next_index == 0 and winner.offset_s == 0 \
                else winner.not_before
            winner.not_before = None
            offset = winner.offset_s
            if a.live and winner.started:
                offset = 0.0
            actions.append(StartItem(a.key, winner.next_index, offset, at,
                                     chime=a.chime and first))
            winner.started = True
            self._playing = (a.key, winner.next_index)
        self._forget_done(now)
        return actions

    def preview(self, at: float) -> list[Action]:
        """What :meth:`evaluate` would do at ``at`` with no other fact arriving; no change."""
        return copy.deepcopy(self).evaluate(at)

    def preview_after_item(self, key: str, index: int, at: float) -> list[Action]:
        """What would follow if the item ended normally at ``at`` (for gapless cueing, or
        cueing after its repeat gap)."""
        clone = copy.deepcopy(self)
        clone.item_ended(key, index, "completed", at)
        progress = clone._progress.get(key)
        gap_end = None if progress is None else progress.not_before
        return clone.evaluate(at if gap_end is None else gap_end)

    # --- queries -----------------------------------------------------------------------
    def activation(self, key: str) -> Activation | None:
        progress = self._progress.get(key)
        return None if progress is None else progress.activation

    def playing_activation(self) -> Activation | None:
        return None if self._playing is None else self.activation(self._playing[0])

    @property
    def playing(self) -> tuple[str, int] | None:
        return self._playing

    def keys(self) -> set[str]:
        return set(self._progress)

    def pending(self) -> list[Activation]:
        return [p.activation for p in self._progress.values() if not p.done]

    def next_boundary(self, now: float) -> float | None:
        """The next instant after ``now`` something may start: a window start, or the end
        of a repeat gap."""
        times = [t for p in self._progress.values() if not p.done
                 for t in (p.activation.start, p.not_before) if t is not None and t > now]
        return min(times, default=None)

    def next_window_end(self, now: float) -> float | None:
        """The next instant after ``now`` a window closes: what plays in it must stop."""
        times = [p.activation.end for p in self._progress.values() if not p.done
                 and p.activation.end is not None and p.activation.end > now]
        return min(times, default=None)

    # --- internals ---------------------------------------------------------------------
    def _winner(self, now: float) -> _Progress | None:
        eligible = [p for p in self._progress.values()
                    if not p.done and p.activation.start <= now
                    and (p.activation.end is None or now < p.activation.end)
                    and (p.not_before is None or p.not_before <= now)]
        if not eligible:
            return None
        return max(eligible, key=lambda p: (PRIORITY_RANK[p.activation.priority],
                                            p.activation.start, p.seq))

    def _resume(self, progress: _Progress, aired: Mapping[int, AiredItem], now: float) -> None:
        """Pick up after a restart: finished items never air again; the item that was
        preempted restarts, and the one cut by a crash follows the late-start rules."""
        progress.started = True  # resumed, not timed to the window start, no chime
        items = progress.activation.items
        index = max(aired)
        past = aired[index]
        if past.outcome == "stopped":
            progress.done = True
            return
        if past.outcome in ("completed", "failed"):
            index += 1
        if progress.activation.live and past.outcome not in (None, "preempted"):
            progress.done = True
            return
        progress.next_index = index
        if index >= len(items):
            progress.done = True
        elif past.outcome is None and not progress.activation.live:
            late = now - past.started_at
            if late > self.late_start_grace_s:
                self._join_late(progress, late, index)

    def _join_late(self, progress: _Progress, late: float, first: int = 0) -> None:
        """Join at the position the activation would have reached ``late`` seconds after
        item ``first`` started."""
        items = progress.activation.items
        if any(item.duration_s is None for item in items[first:]):
            # Where it would be is unknowable (its media is not even cached, or the length
            # would be known from the file): airing it from the start, long after its
            # time, would be worse than missing it.
            progress.done = True
            return
        elapsed = late
        for index, item in list(enumerate(items))[first:]:
            assert item.duration_s is not None
            if elapsed < item.duration_s:
                progress.next_index = index
                progress.offset_s = elapsed
                return
            elapsed -= item.duration_s
        progress.done = True

    def _forget_done(self, now: float) -> None:
        playing_key = None if self._playing is None else self._playing[0]
        for key in [k for k, p in self._progress.items() if p.done and k != playing_key]:
            self._finished[key] = self._progress.pop(key).activation.start
        for key in [k for k, start in self._finished.items() if start < now - _REMEMBER_S]:
            del self._finished[key]
