"""The rolling store's index, read from the directory: a segment's name places it on the
time line, so the listing is the index and nothing else has to survive a power cut.

A closed segment is ``<start>-<samples>.opus``: ``start`` is the Unix time of its first
sample in microseconds, ``samples`` its length at ``RATE``. The open one is
``<start>.partial``. The recorder process writes the store (agent.recording.store); the
agent reads it through a :class:`StoreView`. Nothing here loads numpy or libsndfile.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.recording.span import Recording

# Speech grade, and what horn loudspeakers reproduce (up to ~6 kHz): 48 kHz stereo is
# downmixed and decimated to this. At 16 kHz libopus costs about three times the CPU
# (docs/benchmarks.md), over the recorder's budget.
RATE = 12_000
CLOSED = re.compile(r"(\d+)-(\d+)\.opus$")
PARTIAL = re.compile(r"(\d+)\.partial$")
_SPAN_ATTEMPTS = 3  # a span read while the recorder prunes: listed again


@dataclass(frozen=True)
class Segment:
    start: float  # Unix time of the first sample
    samples: int
    size: int  # bytes on disk
    path: Path

    @property
    def end(self) -> float:
        return self.start + self.samples / RATE


@dataclass(frozen=True)
class Listing:
    segments: list[Segment]  # closed, by start time
    partials: list[Path]  # open (or left open by a crash), by start time


def partial_start(path: Path) -> float:
    """Start time of an open segment, from its name ``<start>.partial``."""
    match = PARTIAL.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not an open segment name")
    return int(match[1]) / 1e6


def list_store(directory: Path) -> Listing:
    """What the directory holds; empty when it does not exist yet."""
    segments, partials = [], []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        closed, partial = CLOSED.match(entry.name), PARTIAL.match(entry.name)
        try:
            if closed:
                segments.append(Segment(int(closed[1]) / 1e6, int(closed[2]),
                                        entry.stat().st_size, Path(entry.path)))
            elif partial:
                partials.append(Path(entry.path))
        except FileNotFoundError:  # pruned or renamed while listed
            continue
    return Listing(sorted(segments, key=lambda s: s.start),
                   sorted(partials, key=partial_start))


class SegmentIndex:
    """The closed segments, by start time, and what is asked of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._bytes = 0

    def _set(self, segments: list[Segment]) -> None:
        """With the lock held."""
        self._segments = segments
        self._bytes = sum(s.size for s in segments)

    def _refresh(self) -> None:
        """Bring the index up to date before a question (the view re-reads the disk)."""

    def segments(self) -> list[Segment]:
        self._refresh()
        with self._lock:
            return list(self._segments)

    @property
    def size(self) -> int:
        self._refresh()
        with self._lock:
            return self._bytes

    @property
    def since(self) -> float | None:
        """Start of the oldest kept audio."""
        self._refresh()
        with self._lock:
            return self._segments[0].start if self._segments else None

    @property
    def end(self) -> float | None:
        """End of the newest closed segment."""
        self._refresh()
        with self._lock:
            return self._segments[-1].end if self._segments else None

    def holding(self, moment: float) -> Segment | None:
        self._refresh()
        with self._lock:
            return next((s for s in reversed(self._segments)
                         if s.start <= moment < s.end), None)

    def span(self, first: float, last: float) -> Recording | None:
        """The closed segments overlapping [first, last), or None when none does."""
        self._refresh()
        with self._lock:
            chosen = [s for s in self._segments if s.start < last and s.end > first]
            if not chosen:
                return None
            body = b"".join(s.path.read_bytes() for s in chosen)
        return Recording(chosen[0].start, body, tuple(s.path.name for s in chosen))


class StoreView(SegmentIndex):
    """The agent's view of the store the recorder process writes: the directory is listed
    again when it changed (its mtime) or the listing is older than ``max_age_s`` (an
    mtime can miss a change made within the same clock tick)."""

    def __init__(self, directory: Path, *, max_age_s: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(directory)
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._listed_at: float | None = None
        self._listed_mtime = 0
        self._open: float | None = None

    def _refresh(self, force: bool = False) -> None:
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        now = self._monotonic()
        with self._lock:
            if not force and self._listed_at is not None and mtime == self._listed_mtime \
                    and now - self._listed_at < self._max_age_s:
                return
            listing = list_store(self.directory)
            self._set(listing.segments)
            self._open = partial_start(listing.partials[-1]) if listing.partials else None
            self._listed_at, self._listed_mtime = now, mtime

    @property
    def open_start(self) -> float | None:
        """Start of the segment being recorded, None when none is open."""
        self._refresh()
        with self._lock:
            return self._open

    def span(self, first: float, last: float) -> Recording | None:
        """As :meth:`SegmentIndex.span`; a segment the recorder pruned meanwhile is
        listed again."""
        for _ in range(_SPAN_ATTEMPTS - 1):
            try:
                return super().span(first, last)
            except FileNotFoundError:
                self._refresh(force=True)
        return super().span(first, last)

    def status(self) -> dict[str, float | int | None]:
        """``since`` (Unix time of the oldest kept audio, None before any) and ``bytes``."""
        since, open_start = self.since, self.open_start
        return {"since": open_start if since is None else since, "bytes": self.size}

    def segment_holding(self, moment: float) -> float | None:
        """Start time of the segment that holds ``moment`` (the open one included)."""
        open_start = self.open_start
        if open_start is not None and moment >= open_start:
            return open_start
        segment = self.holding(moment)
        return None if segment is None else segment.start


def samples_in_name(path: Path) -> int:
    match = CLOSED.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a closed segment name")
    return int(match[2])
