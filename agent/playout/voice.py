"""What the control core and a playout engine share: voices, the events that tell what
became of them, and the engine's interface. No numpy here: the agent process imports this,
the mixing (agent.playout.engine) runs in the playout process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

BYTES_PER_FRAME = 4  # interleaved s16le stereo


class PcmSource(Protocol):
    """Interleaved s16le stereo PCM at the engine's rate. ``read`` never blocks."""

    def read(self, max_bytes: int) -> bytes: ...

    @property
    def finished(self) -> bool:
        """No more PCM will come and everything was read."""


@runtime_checkable
class PeekableSource(PcmSource, Protocol):
    """A source whose next bytes can be seen before they are read (a file's pipe, PCM in
    memory): the engine scales a voice playing from one several periods at a time."""

    def peek(self, max_bytes: int) -> bytes:
        """What ``read`` would return next, up to ``max_bytes``; fewer when the source
        holds less. Never blocks."""


class Voice:
    """One thing to play, and what happened to it (filled in by the engine)."""

    def __init__(self, name: str, source: PcmSource, gain: float, tag: object = None) -> None:
        self.name = name
        self.source = source
        # The source again when it is a PeekableSource (an isinstance of a protocol costs
        # some 15 us: not for every period).
        self.peekable = source if isinstance(source, PeekableSource) else None
        self.gain = gain  # target linear gain; changes are ramped over one period
        self.tag = tag
        self.first_frame: int | None = None
        self.end_frame: int | None = None
        self.frames_played = 0
        self.underrun_frames = 0
        self.cut = False
        # The engine's ramp and read state.
        self.applied_gain = gain
        self.fade_in_left = 0
        self.fade_out_left = 0
        self.fade_out_total = 0
        self.carry = b""  # read from the source, not yet a whole frame
        # Peeked at and scaled by applied_gain, aired a period at a time: the next bytes
        # of the source from ``ahead_at`` on (reading.SteadyReader).
        self.ahead = b""
        self.ahead_at = 0

    def __repr__(self) -> str:
        return f"Voice({self.name})"

    @property
    def done(self) -> bool:
        return self.end_frame is not None


@dataclass(frozen=True)
class VoiceStarted:
    voice: Voice
    frame: int


@dataclass(frozen=True)
class VoiceEnded:
    voice: Voice
    frame: int  # one past the last frame it contributed
    cut: bool  # True when replaced or stopped, False when its source ran out


@dataclass(frozen=True)
class OutputFailed:
    message: str


@dataclass(frozen=True)
class OutputRecovered:
    pass


EngineEvent = VoiceStarted | VoiceEnded | OutputFailed | OutputRecovered


def landed_late(event: EngineEvent, late: int) -> EngineEvent:
    """The event, and its voice's frame, ``late`` frames later: its period reached the
    card after the card ran dry."""
    if isinstance(event, VoiceStarted):
        event.voice.first_frame = event.frame + late
        return VoiceStarted(event.voice, event.frame + late)
    if isinstance(event, VoiceEnded):
        event.voice.end_frame = event.frame + late
        return VoiceEnded(event.voice, event.frame + late, event.cut)
    return event


class Engine(Protocol):
    """What the control loop drives: the real-time :class:`PlayoutEngine`, or the
    in-memory one of the simulation (``agent/playout/memory_engine.py``)."""

    idle_since_frame: int | None  # the first frame of the current silence; None: sounding
    last_sound_frame: int
    card_underrun_frames: int  # silence the card played for want of audio, since the start

    def frame_at(self, wall_time: float) -> int: ...

    def time_of(self, frame: int) -> float: ...

    def play(self, voices: list[Voice], at_frame: int | None = None) -> list[Voice]: ...

    def append(self, voice: Voice) -> None: ...

    def cancel(self, voice: Voice) -> None: ...

    def set_gain(self, voice: Voice, gain: float) -> None:
        """A new target gain for ``voice``, ramped over one period."""
