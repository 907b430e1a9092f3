"""What the card holds ahead of its playhead: how much (for pacing the engine), and the
steady periods in it whose PCM is still in the voice's source: the engine takes them from
the source only once the card's playhead has passed them, and may take them back from the
card until then.

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
from drivers.audio.base import AudioOutput


def frames_ahead(queued: int, ahead_by_clock: int, period: int) -> int:
    """What the card holds that is not yet due, for pacing the engine: ``queued``, its
    count, or ``ahead_by_clock``, the frames written after its playhead
    (AudioOutput.playhead). A card that drains in ticks (the virtual one, or a driver that
    moves its pointer once per hardware period) counts up to a tick more between them:
    going by its count, the engine would wake, find it unchanged and sleep again, twice a
    period. The clock is believed down to one ``period`` below the count, so that a clock
    gone wrong (an ALSA anchor across a step of the wall clock, until it is renewed)
    leaves the count in charge."""
    return min(queued, max(ahead_by_clock, queued - period))


@dataclass(frozen=True)
class _Period:
    voice: Voice
    first: int  # the card's index of its first frame
    frames: int


class UnreadPeriods:
    """The engine thread's own: no lock. Empty when ``periods`` is."""

    def __init__(self) -> None:
        self.periods: deque[_Period] = deque()  # oldest first

    @property
    def bytes(self) -> int:
        """Their PCM: the first bytes of their voice's source."""
        return sum(period.frames for period in self.periods) * BYTES_PER_FRAME

    def voice(self) -> Voice | None:
        return self.periods[0].voice if self.periods else None

    def add(self, voice: Voice, first: int, frames: int) -> None:
        self.periods.append(_Period(voice, first, frames))

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
        voice = period.voice
        # What the voice's source returns now is what was peeked at and aired; fewer
        # bytes only when it was closed under the engine, which has ended the voice.
        voice.frames_played += \
            len(voice.source.read(period.frames * BYTES_PER_FRAME)) // BYTES_PER_FRAME

    def landed_late(self, rendered_for: int, late: int) -> None:
        """The period rendered for ``rendered_for`` reached the card ``late`` frames
        later (it ran dry in between)."""
        if self.periods and (last := self.periods[-1]).first == rendered_for:
            self.periods[-1] = _Period(last.voice, rendered_for + late, last.frames)

    def first_at_or_after(self, frame: int) -> int | None:
        """The first frame of the earliest period that begins at ``frame`` or later."""
        return next((p.first for p in self.periods if p.first >= frame), None)

    def take_back(self, output: AudioOutput, due: int) -> int | None:
        """Has ``output`` give back every period from the first that begins at ``due`` or
        later, and that it can still give back; forgets them. Returns the frame it gave
        back from; None when it gave back nothing."""
        next_index = output.next_frame_index()
        start = self.first_at_or_after(max(due, next_index - output.rewindable()))
        if start is None or not output.rewind(next_index - start):
            return None
        self.forget_from(start)
        return start

    def forget_from(self, frame: int) -> None:
        """The card gave back everything from ``frame`` on, where a period begins: those
        periods never aired, and their PCM is read again from the source."""
        periods = self.periods
        while periods and periods[-1].first >= frame:
            voice = periods.pop().voice
            voice.ahead, voice.ahead_at = b"", 0
