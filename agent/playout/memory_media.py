"""In-memory media for the deterministic simulation (tests/simulation): first-class
backends of :class:`~agent.playout.decoder.Decoders`, :class:`~agent.playout.tts.Speech`
and the control loop's ``MediaLookup``, with no process, file or network.

A :class:`Library` says what every MRL decodes to: a file of so many seconds, or a live
stream whose station the simulation turns ``up``, ``silent`` or ``down``. Decoders
produce PCM as the clock moves (a few seconds ahead of real time, as libvlc does for a
file), and can be made to hang or crash on demand; the speech engine can be broken.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.playout.decoder import Decoded, StreamState
from agent.playout.tts import OpenFile, SpokenStream
from agent.playout.voice import BYTES_PER_FRAME
from drivers.clock import Clock

LOUD_FRAME = (10_000).to_bytes(2, "little", signed=True) * 2
SILENT_FRAME = bytes(BYTES_PER_FRAME)
DECODE_AHEAD_S = 3.0  # how far a file's decoder runs ahead of real time
SPEECH_SECONDS_PER_CHAR = 0.05
Station = Literal["up", "silent", "down"]


@dataclass
class Library:
    """What each MRL decodes to: ``files`` (seconds of sound, or of digital silence when
    also in ``silent``), ``stations`` (live)."""

    rate: int
    files: dict[str, float] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    stations: dict[str, Station] = field(default_factory=dict)


class MemoryStream:
    """One item's decoded PCM (the :class:`~agent.playout.decoder.Decoded` protocol)."""

    def __init__(self, library: Library, mrl: str, start_s: float, clock: Clock) -> None:
        self._library = library
        self.mrl = mrl
        self._clock = clock
        self._rate = library.rate
        length = library.files.get(mrl)
        self._total = None if length is None else round(length * self._rate)
        self._opened = clock.monotonic()
        self._first = self._produced = self._consumed = round(start_s * self._rate)
        self.state: StreamState = "playing"
        self.message = ""
        self.pcm_bytes = 0
        self.last_pcm = self._opened
        self.hung = False
        self.closed = False
        if self._total is None and mrl not in library.stations:
            self._fail("error", f"{mrl}: no such media")

    def _fail(self, state: StreamState, message: str) -> None:
        self.state, self.message = state, message

    def _produce(self) -> None:
        if self.state != "playing" or self.hung:
            return
        now = self._clock.monotonic()
        if self._total is None and self._library.stations.get(self.mrl) == "down":
            self._fail("error", f"{self.mrl}: the stream ended")
            return
        ahead = 0.0 if self._total is None else DECODE_AHEAD_S
        target = self._first + round((now - self._opened + ahead) * self._rate)
        if self._total is not None:
            target = min(target, self._total)
        if target > self._produced:
            self.pcm_bytes += (target - self._produced) * BYTES_PER_FRAME
            self._produced = target
            self.last_pcm = now
        if self._total is not None and self._produced >= self._total:
            self.state = "ended"

    def read(self, max_bytes: int) -> bytes:
        self._produce()
        frames = min(max_bytes // BYTES_PER_FRAME, self._produced - self._consumed)
        self._consumed += frames
        silent = self.mrl in self._library.silent if self._total is not None \
            else self._library.stations.get(self.mrl) != "up"
        return (SILENT_FRAME if silent else LOUD_FRAME) * frames

    def buffered_bytes(self) -> int:
        self._produce()
        return (self._produced - self._consumed) * BYTES_PER_FRAME

    @property
    def finished(self) -> bool:
        self._produce()
        return self.state in ("ended", "error", "crashed", "killed") \
            and self._produced == self._consumed

    def silent_for(self) -> float:
        self._produce()
        return self._clock.monotonic() - self.last_pcm

    def hang(self) -> None:
        """The decoder wedges: no more PCM, no end, until it is killed."""
        self.hung = True

    def crash(self) -> None:
        """The decoder dies: what it produced is still read, then the stream ends."""
        self._produce()
        if self.state == "playing":
            self._fail("crashed", "decoder exited with -11")

    def close(self) -> None:
        if self.state not in ("ended", "error", "crashed"):
            self.state = "killed"
        self.closed = True


class MemoryDecoders:
    """The :class:`~agent.playout.decoder.Decoders` of the simulation."""

    def __init__(self, library: Library, clock: Clock) -> None:
        self._library = library
        self._clock = clock
        self.opened: list[MemoryStream] = []

    def open(self, mrl: str, start_s: float = 0.0, caching_ms: int = 300) -> MemoryStream:
        stream = MemoryStream(self._library, mrl, start_s, self._clock)
        self.opened.append(stream)
        return stream

    def live(self) -> list[MemoryStream]:
        """The streams opened and not closed yet."""
        self.opened = [s for s in self.opened if not s.closed]
        return self.opened


class MemorySpeech:
    """The :class:`~agent.playout.tts.Speech` of the simulation; ``broken`` makes every
    rendering fail as a missing or crashing espeak-ng would."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self.broken = False

    def speak(self, text: str, lang: str | None, open_file: OpenFile) -> Decoded:
        spoken = SpokenStream()
        if self.broken:
            spoken.fail("espeak-ng failed: exit status 1")
            return spoken
        digest = hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()
        mrl = f"/memory/tts/{digest}.wav"
        self._library.files[mrl] = max(1.0, len(text) * SPEECH_SECONDS_PER_CHAR)
        spoken.attach(open_file(Path(mrl)))
        return spoken

    def render_ahead(self, text: str, lang: str | None = None) -> None:
        """Nothing to do ahead: :meth:`speak` renders at once."""


class MemoryCache:
    """The media cache of the simulation (the control loop's ``MediaLookup``): files by
    sha256, with their lengths, and the pins the loop holds while it plays them."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self.pins: Counter[str] = Counter()

    @staticmethod
    def _mrl(sha256: str) -> str:
        return f"/memory/media/{sha256}"

    def store(self, sha256: str, seconds: float, silent: bool = False) -> None:
        self._library.files[self._mrl(sha256)] = seconds
        if silent:
            self._library.silent.add(self._mrl(sha256))

    def evict(self, sha256: str) -> None:
        self._library.files.pop(self._mrl(sha256), None)

    def path(self, sha256: str) -> Path | None:
        return Path(self._mrl(sha256)) if self._mrl(sha256) in self._library.files else None

    def duration_s(self, sha256: str) -> float | None:
        return self._library.files.get(self._mrl(sha256))

    def pin(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        if path is not None:
            self.pins[sha256] += 1
        return path

    def unpin(self, sha256: str) -> None:
        self.pins[sha256] -= 1
