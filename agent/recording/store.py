"""The rolling store of recorded segments as the recorder process writes it; the index
of its names is agent.recording.index.

A segment is written as ``<start>.partial`` and renamed to ``<start>-<samples>.opus`` only
once it is closed and fsynced, so a power cut or a kill loses at most the open segment.
At start-up a ``.partial`` left behind is repaired: what of it decodes becomes a closed
segment.

Bounds: after every new segment the oldest are deleted while the store is over
``max_bytes`` or they ended more than ``max_days`` ago (the newest is always kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from agent.recording.index import RATE, Segment, SegmentIndex, list_store, partial_start
from agent.state.durable import fsync_dir, publish

log = logging.getLogger(__name__)

# libsndfile maps its compression level linearly onto the Opus bitrate: 0.95 is ~19 kbit/s.
_COMPRESSION_LEVEL = 0.95
_REPAIRING = ".repair"


def open_encoder(path: Path) -> sf.SoundFile:
    """A new Ogg Opus file for mono float samples at ``RATE``."""
    return sf.SoundFile(path, "w", samplerate=RATE, channels=1, format="OGG",
                        subtype="OPUS", compression_level=_COMPRESSION_LEVEL)


def _micros(start: float) -> int:
    return round(start * 1_000_000)


class SegmentStore(SegmentIndex):
    def __init__(self, directory: Path, max_bytes: int, max_days: float,
                 now: Callable[[], float]) -> None:
        super().__init__(directory)
        self.max_bytes = max_bytes
        self.max_days = max_days
        self._now = now

    # --- start-up ----------------------------------------------------------------------
    def load(self) -> list[Path]:
        """Index the closed segments on disk; the partial ones left by a crash, to repair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.glob("*" + _REPAIRING):
            path.unlink()  # a repair cut short: its partial is still there
        listing = list_store(self.directory)
        with self._lock:
            self._set(listing.segments)
        return listing.partials

    def repair(self, partial: Path) -> Segment | None:
        """Close what can be decoded of a segment a crash left open; drop the rest."""
        audio = _readable_part(partial)
        if not audio.size:
            partial.unlink()
            fsync_dir(self.directory)
            return None
        temp = partial.with_name(partial.name + _REPAIRING)
        with open_encoder(temp) as encoder:
            encoder.write(audio)
        segment = self.add(temp, partial_start(partial), len(audio))
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
            self._set(sorted([s for s in self._segments if s.path != path] + [segment],
                             key=lambda s: s.start))
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


def _readable_part(path: Path) -> np.ndarray:
    """The samples that decode from the start of a possibly truncated segment. Read until
    a read comes back empty: of a truncated Ogg file, libsndfile 1.2.0 (Debian 12's)
    reports an unknown length, which ``SoundFile.blocks`` would loop over forever."""
    blocks = []
    try:
        with sf.SoundFile(path) as source:
            while len(block := source.read(RATE // 50, dtype="float32")):
                blocks.append(block)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        log.info("recording %s is cut short (%s); keeping what decodes", path.name, exc)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
