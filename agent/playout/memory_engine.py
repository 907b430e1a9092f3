"""The in-memory playout engine: a first-class backend of :class:`~agent.playout.engine.Engine`
for the deterministic simulation (tests/simulation), as gpiozero's mock pins are for pins.

No thread and no card: its owner calls :meth:`MemoryEngine.advance` after moving the
(manual) clock, and the engine reads its voices' sources for the frames that left the
"card" meanwhile, with the events of the real engine (first and last sample, cuts,
underruns, digital silence for dead air). It keeps every voice it started in ``history``
so that a simulation can compare what the control loop reports with what really sounded.
Transitions are instantaneous (no fades): a cut voice ends on the next frame. Frames map
to wall time as an ALSA card's do: anchored anew at every delivery, so a wall-clock step
moves the mapping with it (the ``wav:`` sink's fixed epoch would not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.playout.voice import (
    BYTES_PER_FRAME,
    EngineEvent,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from drivers.clock import Clock


@dataclass
class _Cue:
    voice: Voice
    at_frame: int | None  # None: after the voice before it; -1: now


@dataclass
class Sounded:
    """What one voice delivered: all its frames, and those that were not digital silence."""

    voice: Voice
    loud_frames: int = 0


class MemoryEngine:
    def __init__(self, rate: int, clock: Clock, on_event: Callable[[EngineEvent], None]) -> None:
        self.rate = rate
        self._clock = clock
        self._on_event = on_event
        self._anchor = (0, clock.now())  # (frame, wall time it leaves the card)
        self._mono0 = clock.monotonic()
        self._next = 0  # the next frame to leave the card
        self._current: Sounded | None = None
        self._queue: list[_Cue] = []
        self.idle_since_frame: int | None = 0
        self.last_sound_frame = 0
        self.card_underrun_frames = 0  # a card in memory is never late
        self.history: list[Sounded] = []

    @property
    def current(self) -> Voice | None:
        return None if self._current is None else self._current.voice

    @property
    def queued(self) -> list[Voice]:
        return [cue.voice for cue in self._queue]

    def frame_at(self, wall_time: float) -> int:
        frame, at = self._anchor
        return frame + round((wall_time - at) * self.rate)

    def time_of(self, frame: int) -> float:
        anchor_frame, at = self._anchor
        return at + (frame - anchor_frame) / self.rate

    def play(self, voices: list[Voice], at_frame: int | None = None) -> list[Voice]:
        dropped = [cue.voice for cue in self._queue]
        self._queue = [_Cue(v, at_frame if i == 0 else None) for i, v in enumerate(voices)]
        if at_frame is None and voices:
            self._queue[0].at_frame = -1
        for voice in dropped:
            voice.cut = True
        return dropped

    def append(self, voice: Voice) -> None:
        self._queue.append(_Cue(voice, None))

    def cancel(self, voice: Voice) -> None:
        if self.current is voice:
            self._end_current(self._next, cut=True)
        self._queue = [cue for cue in self._queue if cue.voice is not voice]
        voice.cut = True

    def set_gain(self, voice: Voice, gain: float) -> None:
        voice.gain = gain

    def advance(self) -> None:
        """Deliver every frame up to the clock's present."""
        target = round((self._clock.monotonic() - self._mono0) * self.rate)
        while self._next < target:
            pos = self._next
            if self._queue and self._due(self._queue[0], pos):
                self._start_head(pos)
            limit = target
            head = self._queue[0] if self._queue else None
            if head is not None and head.at_frame is not None and head.at_frame > pos:
                limit = min(limit, head.at_frame)
            if self._current is None:
                if self.idle_since_frame is None:
                    self.idle_since_frame = pos
                self._next = limit
            else:
                self.idle_since_frame = None
                self._next = self._mix(self._current, pos, limit)
        self._anchor = (self._next, self._clock.now())

    def _due(self, cue: _Cue, frame: int) -> bool:
        if cue.at_frame is None:
            return self._current is None
        return cue.at_frame <= frame

    def _start_head(self, pos: int) -> None:
        voice = self._queue.pop(0).voice
        if self._current is not None:
            self._end_current(pos, cut=True)
        voice.first_frame = pos
        self._current = Sounded(voice)
        self.history.append(self._current)
        self._on_event(VoiceStarted(voice, pos))

    def _end_current(self, frame: int, cut: bool) -> None:
        assert self._current is not None
        voice = self._current.voice
        voice.cut = voice.cut or cut
        voice.end_frame = frame
        self._current = None
        self._on_event(VoiceEnded(voice, frame, cut=cut))

    def _mix(self, sounded: Sounded, pos: int, limit: int) -> int:
        """Deliver ``sounded`` from ``pos`` towards ``limit``; returns where it got to."""
        voice = sounded.voice
        want = limit - pos
        data = voice.source.read(want * BYTES_PER_FRAME)
        got = len(data) // BYTES_PER_FRAME
        voice.frames_played += got
        if data.strip(b"\0"):
            sounded.loud_frames += got
            self.last_sound_frame = pos + got
        if got == want:
            return limit
        if voice.source.finished:
            self._end_current(pos + got, cut=False)
            return pos + got
        voice.underrun_frames += want - got
        return limit
