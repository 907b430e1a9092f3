"""Content-addressed cache of verified media files, with a byte quota and pins.

A download is published only after its size and sha256 match the schedule entry, so a path
handed out by :meth:`MediaCache.path` is always complete. The index and the files are in
agent/source/cache_storage.py; downloads resume after a crash or a power cut
(agent/source/cache_partial.py).
"""

from __future__ import annotations

import errno
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.core.clock import Clock
from agent.core.faults import FaultError, FaultRegistry
from agent.source.cache_partial import append_to_part, restart_part, resume_part
from agent.source.cache_storage import CacheStorage, hash_file, log
from agent.source.client import SourceClient, SourceError
from agent.state.store import StateStore

_LAST_USED_RESOLUTION_S = 60.0  # LRU precision; spares the SD card a write per lookup


class MediaRef(Protocol):
    """What the cache needs of a schedule media entry (agent.core.schedule.MediaEntry)."""

    @property
    def id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


class CacheError(FaultError):
    """A media file could not be cached; ``code`` is the fault code already raised."""


@dataclass(frozen=True)
class CacheEntry:
    sha256: str
    media_id: str
    size: int
    last_used: float


@dataclass(frozen=True)
class CacheStats:
    items: int  # verified files
    bytes: int  # verified files plus the durable part of downloads
    free_bytes: int  # free space of the filesystem holding the cache
    missing: int  # files the applied schedule references that are not cached yet


class MediaCache:
    def __init__(self, store: StateStore, directory: Path, max_bytes: int, clock: Clock,
                 faults: FaultRegistry, min_free_bytes: int = 0) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Downloads never take the file system below this: the state database (play
        # reports, faults, acks) usually shares it.
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._faults = faults
        self._lock = threading.RLock()  # index, pins and files; never held over the network
        self._fetch_lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._durations: dict[str, float | None] = {}
        self._referenced: dict[str, int] = {}  # sha256 -> size
        self._corrupt: dict[str, str] = {}  # sha256 -> message
        self._storage = CacheStorage(store, self.directory, clock)
        self.reconcile()

    # --- reading ---------------------------------------------------------------------
    def path(self, sha256: str) -> Path | None:
        """The verified file, or None when it is not cached."""
        with self._lock:
            row = self._storage.row(sha256)
            if row is None or row.state != "ready":
                return None
            now = self._clock.now()
            if now - row.last_used >= _LAST_USED_RESOLUTION_S:
                self._storage.set(sha256, last_used=now)
            return self._storage.final(sha256)

    def duration_s(self, sha256: str) -> float | None:
        """The playing time of a cached file, read from its headers (for media entries
        without ``duration_s``); None when not cached or not readable."""
        if sha256 in self._durations:
            return self._durations[sha256]
        path = self.path(sha256)
        if path is None:
            return None
        import mutagen  # only here: most schedules carry duration_s

        try:
            info = getattr(mutagen.File(path), "info", None)
            length = float(info.length) if info is not None and info.length > 0 else None
        except (OSError, mutagen.MutagenError) as exc:
            log.warning("cache: cannot read the length of %s: %s", sha256, exc)
            length = None
        self._durations[sha256] = length
        return length

    def pin(self, sha256: str) -> Path | None:
        """Pin a file while it plays (never evicted); None (and no pin) when not cached."""
        with self._lock:
            found = self.path(sha256)
            if found is not None:
                self._pins[sha256] += 1
            return found

    def unpin(self, sha256: str) -> None:
        with self._lock:
            if self._pins[sha256] > 0:
                self._pins[sha256] -= 1
            if self._pins[sha256] == 0:
                del self._pins[sha256]

    def missing(self, entries: Iterable[MediaRef]) -> list[MediaRef]:
        """The entries not cached yet, in the given order."""
        with self._lock:
            ready = {r.sha256 for r in self._storage.rows() if r.state == "ready"}
        return [e for e in entries if e.sha256 not in ready]

    def entries(self) -> list[CacheEntry]:
        return [CacheEntry(r.sha256, r.media_id, r.size, r.last_used)
                for r in self._storage.rows() if r.state == "ready"]

    def stats(self) -> CacheStats:
        with self._lock:
            rows = self._storage.rows()
            ready = {r.sha256 for r in rows if r.state == "ready"}
            missing = sum(1 for sha in self._referenced if sha not in ready)
        used = sum(r.size if r.state == "ready" else r.durable_bytes for r in rows)
        return CacheStats(items=len(ready), bytes=used,
                          free_bytes=shutil.disk_usage(self.directory).free, missing=missing)

    # --- what the schedule needs -----------------------------------------------------
    def set_referenced(self, entries: Iterable[MediaRef]) -> None:
        """The media the applied schedule references: never evicted."""
        with self._lock:
            self._referenced = {e.sha256: e.size for e in entries}
            for sha in [s for s in self._corrupt if s not in self._referenced]:
                del self._corrupt[sha]
            self._update_corrupt_fault()
        need = sum(self._referenced.values())
        if need > self.max_bytes:
            self._faults.raise_("cache_quota", f"the schedule needs {need} bytes of media, "
                                f"cache.max_bytes is {self.max_bytes}")
        else:
            self._faults.clear("cache_quota")

    def evict(self) -> list[str]:
        """Bring the cache under its quota; returns the evicted sha256s."""
        with self._lock:
            return self._evict_until(self.max_bytes, keep=None)[1]

    # --- downloading -----------------------------------------------------------------
    def fetch(self, entry: MediaRef, client: SourceClient,
              cancelled: Callable[[], bool] = lambda: False) -> Path | None:
        """Download (or resume) and verify one file. None when ``cancelled`` cut it short.

        Raises SourceError (network; the partial file is kept for resuming) or CacheError
        (corrupt, disk full, quota; the matching fault is raised here).
        """
        with self._fetch_lock:
            cached = self.path(entry.sha256)
            if cached is not None:
                return cached
            with self._lock:
                self._reserve(entry)
                written, hasher = resume_part(self._storage, entry.sha256, entry.size)
            try:
                if written < entry.size:
                    # Not even a request when the rest cannot be stored: a full disk would
                    # otherwise cost the link the same bytes at every retry.
                    self._check_room(entry.size - written)
                    with client.open_media(entry.url, written, entry.id) as body:
                        if body.start != written:
                            log.info("media %s: server ignored Range, restarting", entry.id)
                            with self._lock:
                                written, hasher = restart_part(self._storage, entry.sha256)
                        written = append_to_part(
                            self._storage, entry.sha256, body.chunks, written, hasher,
                            lambda done, chunk: self._check_chunk(entry, done, chunk),
                            cancelled)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                message = (f"no space in {self.directory} for media {entry.id} "
                           f"({entry.size} bytes): {exc.strerror}; the partial file is kept")
                self._faults.raise_("disk_full", message)
                raise CacheError("disk_full", message) from exc
            if written < entry.size:
                if cancelled():
                    return None
                raise SourceError("source_bad_response", f"media {entry.id}: body ended at "
                                  f"{written} of {entry.size} bytes")
            return self._publish(entry, hasher.hexdigest())

    def _reserve(self, entry: MediaRef) -> None:
        if self._storage.row(entry.sha256) is not None:
            return
        fits, _ = self._evict_until(self.max_bytes - entry.size, keep=entry.sha256)
        if not fits:
            message = (f"media {entry.id} ({entry.size} bytes) does not fit in "
                       f"cache.max_bytes {self.max_bytes} beside referenced and playing files")
            self._faults.raise_("cache_quota", message)
            raise CacheError("cache_quota", message)
        self._storage.add_partial(entry.sha256, entry.id, entry.size)

    def _check_room(self, size: int) -> None:
        """ENOSPC when writing ``size`` bytes would leave less than min_free_bytes free."""
        if shutil.disk_usage(self.directory).free - size < self.min_free_bytes:
            raise OSError(errno.ENOSPC, f"fewer than cache.min_free_bytes "
                          f"({self.min_free_bytes}) would stay free")

    def _check_chunk(self, entry: MediaRef, written: int, chunk: bytes) -> None:
        """Before a chunk is written: no more than the entry's size, and room for it."""
        if written + len(chunk) > entry.size:
            self._discard_corrupt(entry, f"media {entry.id}: the server sent more "
                                  f"than the {entry.size} bytes the schedule names")
        self._check_room(len(chunk))

    def _publish(self, entry: MediaRef, digest: str) -> Path:
        if digest != entry.sha256:
            self._discard_corrupt(entry, f"media {entry.id}: sha256 of the download is "
                                  f"{digest}, the schedule says {entry.sha256}")
        with self._lock:
            final = self._storage.publish(entry.sha256, entry.size)
            self._corrupt.pop(entry.sha256, None)
            self._update_corrupt_fault()
        self._faults.clear("disk_full")
        return final

    def _discard_corrupt(self, entry: MediaRef, message: str) -> None:
        with self._lock:
            self._storage.forget(entry.sha256)
            self._corrupt[entry.sha256] = message
            self._update_corrupt_fault()
        raise CacheError("media_corrupt", message)

    def _update_corrupt_fault(self) -> None:
        if self._corrupt:
            self._faults.raise_("media_corrupt", "; ".join(self._corrupt.values()))
        else:
            self._faults.clear("media_corrupt")

    # --- quota -----------------------------------------------------------------------
    def _evict_until(self, limit: int, keep: str | None) -> tuple[bool, list[str]]:
        """Evict unreferenced, unpinned files (partial ones first, then least recently
        used) until the reserved bytes are within ``limit``. Whether they are, and what
        was evicted."""
        rows = self._storage.rows()
        used = sum(r.size for r in rows)
        candidates = sorted((r for r in rows if r.sha256 not in self._referenced
                             and r.sha256 not in self._pins and r.sha256 != keep),
                            key=lambda r: (r.state == "ready", r.last_used))
        evicted: list[str] = []
        for row in candidates:
            if used <= limit:
                break
            self._storage.forget(row.sha256)
            used -= row.size
            evicted.append(row.sha256)
            log.info("cache: evicted %s (media %s, %d bytes)", row.sha256, row.media_id,
                     row.size)
        return used <= limit, evicted

    # --- consistency -----------------------------------------------------------------
    def reconcile(self) -> None:
        """Make the index and the files agree (after a crash or a hand-edited disk)."""
        with self._lock:
            self._storage.reconcile()

    def verify(self) -> list[str]:
        """Re-hash every cached file; drop the bad ones (kept while playing). Problems."""
        problems: list[str] = []
        for entry in self.entries():
            final = self._storage.final(entry.sha256)
            digest = hash_file(final) if final.is_file() else "missing"
            if digest == entry.sha256:
                continue
            with self._lock:
                if entry.sha256 in self._pins:
                    problems.append(f"media {entry.media_id}: {final} does not match its "
                                    f"sha256; kept while it plays")
                    continue
                message = f"media {entry.media_id}: {final} no longer matches its sha256"
                problems.append(message)
                self._storage.forget(entry.sha256)
                self._corrupt[entry.sha256] = message
                self._update_corrupt_fault()
        return problems
