"""The steady periods in the card that it has not played yet, and whose PCM is still in
the voice's source: the engine takes them from the source only once the card's playhead
has passed them, and may take them back from the card until then.

A steady period of a voice the engine can peek at (a file's pipe, PCM in memory) is
rendered from what it peeked at, not read. So a playout process that dies has taken from
the pipe only what the card played, and the next one plays on from the frame the air
reached; the counts (Voice.frames_played) say what was heard; and the engine can keep
the card deep, safe from a stall of the machine, yet replace what it holds at once when a
cue, a cut or a gain change comes (PlayoutEngine's rewind, docs/design.md "The card's
lead").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.playout.voice import BYTES_PER_FRAME, Voice


@dataclass(frozen=True)
class _Period:
    voice: Voice
    first: int  # the card's index of its first frame
    frames: int


class UnreadPeriods:
    """The engine thread's own: no lock."""

    def __init__(self) -> None:
        self.periods: deque[_Period] = deque()  # oldest first
        self.bytes = 0  # their PCM, the first bytes of their voice's source

    def __bool__(self) -> bool:
        return bool(self.periods)

    def voice(self) -> Voice | None:
        return self.periods[0].voice if self.periods else None

    def add(self, voice: Voice, first: int, frames: int) -> None:
        self.periods.append(_Period(voice, first, frames))
        self.bytes += frames * BYTES_PER_FRAME

    def settle(self, playhead: int) -> None:
        """Take from their sources the periods the card has played."""
        periods = self.periods
        while periods and periods[0].first + periods[0].frames <= playhead:
            self._take(periods.popleft())

    def take_all(self) -> None:
        """Take every period from its source: the engine is about to read on after them
        (the general path), and they can no longer be taken back."""
        while self.periods:
            self._take(self.periods.popleft())

    def _take(self, period: _Period) -> None:
        size = period.frames * BYTES_PER_FRAME
        self.bytes -= size
        voice = period.voice
        # What the voice's source returns now is what was peeked at and aired; fewer
        # bytes only when it was closed under the engine, which has ended the voice.
        voice.frames_played += len(voice.source.read(size)) // BYTES_PER_FRAME

    def landed_late(self, rendered_for: int, late: int) -> None:
        """The period rendered for ``rendered_for`` reached the card ``late`` frames
        later (it ran dry in between)."""
        if self.periods and (last := self.periods[-1]).first == rendered_for:
            self.periods[-1] = _Period(last.voice, rendered_for + late, last.frames)

    def first_at_or_after(self, frame: int) -> int | None:
        """The first frame of the earliest period that begins at ``frame`` or later."""
        return next((p.first for p in self.periods if p.first >= frame), None)

    def forget_from(self, frame: int) -> None:
        """The card gave back everything from ``frame`` on, where a period begins: those
        periods never aired, and their PCM is read again from the source."""
        periods = self.periods
        while periods and periods[-1].first >= frame:
            period = periods.pop()
            self.bytes -= period.frames * BYTES_PER_FRAME
            period.voice.ahead, period.voice.ahead_at = b"", 0
