"""The rolling store of recorded segments, indexed by time through the file names.

A closed segment is ``<start>-<samples>.opus``: ``start`` is the Unix time of its first
sample in microseconds, ``samples`` its length at ``RATE``, so the name alone places it on
the time line and the directory listing is the index; nothing else has to survive a power
cut. A segment is written as ``<start>.partial`` and renamed only once it is closed and
fsynced, so a power cut or a kill loses at most the open segment. At start-up a
``.partial`` left behind is repaired: what of it decodes becomes a closed segment.

Bounds: after every new segment the oldest are deleted while the store is over
``max_bytes`` or they ended more than ``max_days`` ago (the newest is always kept).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from agent.recording.span import Recording
from agent.state.durable import fsync_dir, publish

log = logging.getLogger(__name__)

# Speech grade, and what horn loudspeakers reproduce (up to ~6 kHz): 48 kHz stereo is
# downmixed and decimated to this. At 16 kHz libopus costs about three times the CPU
# (docs/benchmarks.md), over the recorder's budget.
RATE = 12_000
# libsndfile maps its compression level linearly onto the Opus bitrate: 0.95 is ~19 kbit/s.
_COMPRESSION_LEVEL = 0.95
_CLOSED = re.compile(r"(\d+)-(\d+)\.opus$")
_PARTIAL = re.compile(r"(\d+)\.partial$")
_REPAIRING = ".repair"


def open_encoder(path: Path) -> sf.SoundFile:
    """A new Ogg Opus file for mono float samples at ``RATE``."""
    return sf.SoundFile(path, "w", samplerate=RATE, channels=1, format="OGG",
                        subtype="OPUS", compression_level=_COMPRESSION_LEVEL)


def _micros(start: float) -> int:
    return round(start * 1_000_000)


@dataclass(frozen=True)
class Segment:
    start: float  # Unix time of the first sample
    samples: int
    size: int  # bytes on disk
    path: Path

    @property
    def end(self) -> float:
        return self.start + self.samples / RATE


class SegmentStore:
    def __init__(self, directory: Path, max_bytes: int, max_days: float,
                 now: Callable[[], float]) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_days = max_days
        self._now = now
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # closed, by start time
        self._bytes = 0

    # --- start-up ----------------------------------------------------------------------
    def load(self) -> list[Path]:
        """Index the closed segments on disk; the partial ones left by a crash, to repair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments, partials = [], []
        for path in self.directory.iterdir():
            closed, partial = _CLOSED.match(path.name), _PARTIAL.match(path.name)
            if closed:
                segments.append(Segment(int(closed[1]) / 1e6, int(closed[2]),
                                        path.stat().st_size, path))
            elif partial:
                partials.append(path)
            elif path.name.endswith(_REPAIRING):
                path.unlink()  # a repair cut short: its partial is still there
        with self._lock:
            self._segments = sorted(segments, key=lambda s: s.start)
            self._bytes = sum(s.size for s in segments)
        return sorted(partials)

    def repair(self, partial: Path) -> Segment | None:
        """Close what can be decoded of a segment a crash left open; drop the rest."""
        match = _PARTIAL.match(partial.name)
        assert match is not None
        audio = _readable_part(partial)
        if not audio.size:
            partial.unlink()
            fsync_dir(self.directory)
            return None
        temp = partial.with_name(partial.name + _REPAIRING)
        with open_encoder(temp) as encoder:
            encoder.write(audio)
        segment = self.add(temp, int(match[1]) / 1e6, len(audio))
        partial.unlink()
        fsync_dir(self.directory)
        return segment

    # --- writing -----------------------------------------------------------------------
    def partial_path(self, start: float) -> Path:
        return self.directory / f"{_micros(start)}.partial"

    def add(self, written: Path, start: float, samples: int) -> Segment:
        """Publish a closed segment file durably under its indexed name, then prune."""
        path = self.directory / f"{_micros(start)}-{samples}.opus"
        publish(written, path)
        segment = Segment(start, samples, path.stat().st_size, path)
        with self._lock:
            self._segments = [s for s in self._segments if s.path != path] + [segment]
            self._segments.sort(key=lambda s: s.start)
            self._bytes = sum(s.size for s in self._segments)
            doomed = self._prune()
        for old in doomed:
            old.path.unlink(missing_ok=True)
        if doomed:
            fsync_dir(self.directory)
            log.info("recording store: deleted %d oldest segment(s)", len(doomed))
        return segment

    def _prune(self) -> list[Segment]:
        horizon = self._now() - self.max_days * 86_400
        doomed = []
        while len(self._segments) > 1 and (self._bytes > self.max_bytes
                                           or self._segments[0].end < horizon):
            oldest = self._segments.pop(0)
            self._bytes -= oldest.size
            doomed.append(oldest)
        return doomed

    # --- reading -----------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        with self._lock:
            return list(self._segments)

    @property
    def size(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def since(self) -> float | None:
        """Start of the oldest kept audio."""
        with self._lock:
            return self._segments[0].start if self._segments else None

    @property
    def end(self) -> float | None:
        """End of the newest closed segment."""
        with self._lock:
            return self._segments[-1].end if self._segments else None

    def holding(self, moment: float) -> Segment | None:
        with self._lock:
            return next((s for s in reversed(self._segments)
                         if s.start <= moment < s.end), None)

    def span(self, first: float, last: float) -> Recording | None:
        """The closed segments overlapping [first, last), or None when none does. Read
        under the lock, so that pruning cannot take a file between listing and reading."""
        with self._lock:
            chosen = [s for s in self._segments if s.start < last and s.end > first]
            if not chosen:
                return None
            body = b"".join(s.path.read_bytes() for s in chosen)
        return Recording(chosen[0].start, body, tuple(s.path.name for s in chosen))


def _readable_part(path: Path) -> np.ndarray:
    """The samples that decode from the start of a possibly truncated segment."""
    blocks = []
    try:
        with sf.SoundFile(path) as source:
            for block in source.blocks(blocksize=RATE // 50, dtype="float32"):
                blocks.append(block)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        log.info("recording %s is cut short (%s); keeping what decodes", path.name, exc)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def segment_files(directory: Path) -> list[Path]:
    """The closed segment files of a store directory, oldest first (for tools and tests)."""
    return sorted((p for p in directory.iterdir() if _CLOSED.match(p.name)),
                  key=lambda p: int(p.name.split("-")[0]))


def samples_in_name(path: Path) -> int:
    match = _CLOSED.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a closed segment name")
    return int(match[2])

