"""Content-addressed cache of verified media files, with a byte quota and pins.

Layout under ``cache.dir``: ``<sha[:2]>/<sha>`` holds verified files (playable), and
``partial/<sha>.part`` downloads in progress. A download is published only after its size
and sha256 match the schedule entry: fsync the file, rename it into place, fsync both
directories. So a path handed out by :meth:`MediaCache.path` is always complete, and a
published file is never written again (a player may hold it open).

Resuming after a power cut: every ``_DURABLE_STEP`` bytes the ``.part`` file is fsynced
and its durable length recorded in the index. On resume the file is cut back to that
length (whatever the kernel wrote past it may be garbage) and the prefix re-hashed.

The index lives in the agent's StateStore (table ``media_cache``); at start it is
reconciled with what is on disk.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.core.clock import Clock
from agent.core.faults import FaultError, FaultRegistry
from agent.source.client import SourceClient, SourceError
from agent.state.durable import fsync_dir
from agent.state.store import StateStore

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS media_cache (
    sha256 TEXT PRIMARY KEY,
    media_id TEXT NOT NULL,
    size INTEGER NOT NULL,           -- the entry's size (reserved against the quota)
    state TEXT NOT NULL CHECK (state IN ('partial', 'ready')),
    durable_bytes INTEGER NOT NULL,  -- partial: fsynced length of the .part file
    last_used REAL NOT NULL
);
"""
_DURABLE_STEP = 256 * 1024
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_WRITER_BOOT_KEY = "cache.partial_boot_id"  # the boot during which .part files were written
_LAST_USED_RESOLUTION_S = 60.0  # LRU precision; spares the SD card a write per lookup
_HASH_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}$")


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


@dataclass(frozen=True)
class _Row:
    sha256: str
    media_id: str
    size: int
    state: str
    durable_bytes: int
    last_used: float


class MediaCache:
    def __init__(self, store: StateStore, directory: Path, max_bytes: int, clock: Clock,
                 faults: FaultRegistry, min_free_bytes: int = 0) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Downloads never take the file system below this: the state database (play
        # reports, faults, acks) usually shares it.
        self.min_free_bytes = min_free_bytes
        self._store = store
        self._clock = clock
        self._faults = faults
        self._lock = threading.RLock()  # index, pins and files; never held over the network
        self._fetch_lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._durations: dict[str, float | None] = {}
        self._referenced: dict[str, int] = {}  # sha256 -> size
        self._corrupt: dict[str, str] = {}  # sha256 -> message
        self._partial_dir.mkdir(parents=True, exist_ok=True)
        store.ensure_schema(_SCHEMA)
        self.reconcile()

    @property
    def _partial_dir(self) -> Path:
        return self.directory / "partial"

    def _final(self, sha: str) -> Path:
        return self.directory / sha[:2] / sha

    def _part(self, sha: str) -> Path:
        return self._partial_dir / f"{sha}.part"

    # --- reading ---------------------------------------------------------------------
    def path(self, sha256: str) -> Path | None:
        """The verified file, or None when it is not cached."""
        with self._lock:
            row = self._row(sha256)
            if row is None or row.state != "ready":
                return None
            now = self._clock.now()
            if now - row.last_used >= _LAST_USED_RESOLUTION_S:
                self._set(sha256, last_used=now)
            return self._final(sha256)

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
            ready = {r.sha256 for r in self._rows() if r.state == "ready"}
        return [e for e in entries if e.sha256 not in ready]

    def entries(self) -> list[CacheEntry]:
        return [CacheEntry(r.sha256, r.media_id, r.size, r.last_used)
                for r in self._rows() if r.state == "ready"]

    def stats(self) -> CacheStats:
        with self._lock:
            rows = self._rows()
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
                written, hasher = self._resume_point(entry)
            try:
                if written < entry.size:
                    # Not even a request when the rest cannot be stored: a full disk would
                    # otherwise cost the link the same bytes at every retry.
                    self._check_room(entry.size - written)
                    with client.open_media(entry.url, written, entry.id) as body:
                        if body.start != written:
                            log.info("media %s: server ignored Range, restarting", entry.id)
                            written, hasher = self._restart(entry)
                        written = self._receive(entry, body.chunks, written, hasher, cancelled)
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
        if self._row(entry.sha256) is not None:
            return
        fits, _ = self._evict_until(self.max_bytes - entry.size, keep=entry.sha256)
        if not fits:
            message = (f"media {entry.id} ({entry.size} bytes) does not fit in "
                       f"cache.max_bytes {self.max_bytes} beside referenced and playing files")
            self._faults.raise_("cache_quota", message)
            raise CacheError("cache_quota", message)
        self._part(entry.sha256).unlink(missing_ok=True)  # unknown durable length: restart
        with self._store.transaction() as db:
            db.execute("INSERT INTO media_cache(sha256, media_id, size, state, durable_bytes, "
                       "last_used) VALUES (?, ?, ?, 'partial', 0, ?)",
                       (entry.sha256, entry.id, entry.size, self._clock.now()))

    def _resume_point(self, entry: MediaRef) -> tuple[int, hashlib._Hash]:
        """Where to resume, with the hash of the prefix kept.

        After a power cut only the fsynced (durable) length can be trusted: the rest may
        be zeros or garbage, so the .part is cut back to it. When the machine has not
        rebooted since the .part was written (the agent was killed or restarted), the
        kernel kept every byte written, and all of it is kept: a crash costs no re-fetch.
        """
        part = self._part(entry.sha256)
        row = self._row(entry.sha256)
        on_disk = part.stat().st_size if part.exists() else 0
        same_boot = _boot_id() is not None and self._store.get(_WRITER_BOOT_KEY) == _boot_id()
        trusted = on_disk if same_boot else (row.durable_bytes if row is not None else 0)
        durable = min(trusted, on_disk, entry.size)
        with open(part, "ab") as f:
            f.truncate(durable)
        hasher = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(_HASH_CHUNK), b""):
                hasher.update(block)
        self._set(entry.sha256, durable_bytes=durable)
        return durable, hasher

    def _restart(self, entry: MediaRef) -> tuple[int, hashlib._Hash]:
        with self._lock:
            os.truncate(self._part(entry.sha256), 0)
            self._set(entry.sha256, durable_bytes=0)
        return 0, hashlib.sha256()

    def _receive(self, entry: MediaRef, chunks: Iterator[bytes], written: int,
                 hasher: hashlib._Hash, cancelled: Callable[[], bool]) -> int:
        """Append the body to the .part file; returns the length written (and fsynced)."""
        self._store.put(_WRITER_BOOT_KEY, _boot_id())
        fd = os.open(self._part(entry.sha256), os.O_WRONLY | os.O_CREAT, 0o644)
        unsynced = 0
        try:
            os.lseek(fd, written, os.SEEK_SET)
            for chunk in chunks:
                if written + len(chunk) > entry.size:
                    self._discard_corrupt(entry, f"media {entry.id}: the server sent more "
                                          f"than the {entry.size} bytes the schedule names")
                self._check_room(len(chunk))
                hasher.update(chunk)
                _write_all(fd, chunk)
                written += len(chunk)
                unsynced += len(chunk)
                if unsynced >= _DURABLE_STEP:
                    os.fsync(fd)
                    self._set(entry.sha256, durable_bytes=written)
                    unsynced = 0
                if cancelled():
                    break
        finally:
            self._sync_durable(fd, entry.sha256, written)
        return written

    def _check_room(self, size: int) -> None:
        """ENOSPC when writing ``size`` bytes would leave less than min_free_bytes free."""
        if shutil.disk_usage(self.directory).free - size < self.min_free_bytes:
            raise OSError(errno.ENOSPC, f"fewer than cache.min_free_bytes "
                          f"({self.min_free_bytes}) would stay free")

    def _sync_durable(self, fd: int, sha: str, written: int) -> None:
        """Close the .part, recording how much of it is durable (when fsync works)."""
        try:
            os.fsync(fd)
            if self._row(sha) is not None:
                self._set(sha, durable_bytes=written)
        except OSError as exc:
            log.warning("cache: fsync of %s.part failed: %s", sha, exc)
        finally:
            os.close(fd)

    def _publish(self, entry: MediaRef, digest: str) -> Path:
        if digest != entry.sha256:
            self._discard_corrupt(entry, f"media {entry.id}: sha256 of the download is "
                                  f"{digest}, the schedule says {entry.sha256}")
        final = self._final(entry.sha256)
        with self._lock:
            final.parent.mkdir(exist_ok=True)
            os.replace(self._part(entry.sha256), final)
            fsync_dir(final.parent)
            fsync_dir(self._partial_dir)
            self._set(entry.sha256, state="ready", durable_bytes=entry.size,
                      last_used=self._clock.now())
            self._corrupt.pop(entry.sha256, None)
            self._update_corrupt_fault()
        self._faults.clear("disk_full")
        return final

    def _discard_corrupt(self, entry: MediaRef, message: str) -> None:
        with self._lock:
            self._forget(entry.sha256)
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
        rows = self._rows()
        used = sum(r.size for r in rows)
        candidates = sorted((r for r in rows if r.sha256 not in self._referenced
                             and r.sha256 not in self._pins and r.sha256 != keep),
                            key=lambda r: (r.state == "ready", r.last_used))
        evicted: list[str] = []
        for row in candidates:
            if used <= limit:
                break
            self._forget(row.sha256)
            used -= row.size
            evicted.append(row.sha256)
            log.info("cache: evicted %s (media %s, %d bytes)", row.sha256, row.media_id,
                     row.size)
        return used <= limit, evicted

    # --- consistency -----------------------------------------------------------------
    def reconcile(self) -> None:
        """Make the index and the files agree (after a crash or a hand-edited disk)."""
        with self._lock:
            rows = {r.sha256: r for r in self._rows()}
            for row in rows.values():
                final, part = self._final(row.sha256), self._part(row.sha256)
                if row.state == "ready" and not (final.is_file()
                                                 and final.stat().st_size == row.size):
                    log.warning("cache: %s (media %s) is gone or damaged; dropped",
                                row.sha256, row.media_id)
                    self._forget(row.sha256)
                elif row.state == "partial" and not part.exists():
                    self._set(row.sha256, durable_bytes=0)
            for stray in self._partial_dir.iterdir():
                owner = rows.get(stray.name.removesuffix(".part"))
                if owner is None or owner.state != "partial" or stray.suffix != ".part":
                    log.info("cache: removing stray partial file %s", stray)
                    stray.unlink()
            for bucket in self.directory.iterdir():
                if bucket == self._partial_dir or not bucket.is_dir():
                    continue
                for file in bucket.iterdir():
                    listed = rows.get(file.name)
                    if listed is None or listed.state != "ready":
                        self._adopt_or_remove(file, listed)

    def _adopt_or_remove(self, file: Path, row: _Row | None) -> None:
        """A published file the index does not list (the crash hit between the rename and
        the index update): keep it if its content matches its name."""
        if _SHA256.match(file.name) and file.parent.name == file.name[:2] \
                and _hash_file(file) == file.name:
            size = file.stat().st_size
            with self._store.transaction() as db:
                db.execute("INSERT OR REPLACE INTO media_cache(sha256, media_id, size, state, "
                           "durable_bytes, last_used) VALUES (?, ?, ?, 'ready', ?, ?)",
                           (file.name, row.media_id if row else "", size, size,
                            self._clock.now()))
            self._part(file.name).unlink(missing_ok=True)
            log.info("cache: adopted %s", file)
            return
        log.warning("cache: removing unlisted file %s", file)
        file.unlink()

    def verify(self) -> list[str]:
        """Re-hash every cached file; drop the bad ones (kept while playing). Problems."""
        problems: list[str] = []
        for entry in self.entries():
            final = self._final(entry.sha256)
            digest = _hash_file(final) if final.is_file() else "missing"
            if digest == entry.sha256:
                continue
            with self._lock:
                if entry.sha256 in self._pins:
                    problems.append(f"media {entry.media_id}: {final} does not match its "
                                    f"sha256; kept while it plays")
                    continue
                message = f"media {entry.media_id}: {final} no longer matches its sha256"
                problems.append(message)
                self._forget(entry.sha256)
                self._corrupt[entry.sha256] = message
                self._update_corrupt_fault()
        return problems

    # --- index -----------------------------------------------------------------------
    def _rows(self) -> list[_Row]:
        with self._store.transaction() as db:
            found = db.execute("SELECT sha256, media_id, size, state, durable_bytes, last_used "
                               "FROM media_cache").fetchall()
        return [_Row(*r) for r in found]

    def _row(self, sha: str) -> _Row | None:
        with self._store.transaction() as db:
            found = db.execute("SELECT sha256, media_id, size, state, durable_bytes, last_used "
                               "FROM media_cache WHERE sha256=?", (sha,)).fetchone()
        return None if found is None else _Row(*found)

    def _set(self, sha: str, **columns: object) -> None:
        assignments = ", ".join(f"{name}=?" for name in columns)
        with self._store.transaction() as db:
            db.execute(f"UPDATE media_cache SET {assignments} WHERE sha256=?",
                       (*columns.values(), sha))

    def _forget(self, sha: str) -> None:
        """Delete a file (verified or partial) and its index row."""
        self._final(sha).unlink(missing_ok=True)
        self._part(sha).unlink(missing_ok=True)
        with self._store.transaction() as db:
            db.execute("DELETE FROM media_cache WHERE sha256=?", (sha,))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _boot_id() -> str | None:
    """The kernel's id of this boot: it changes at every reboot and power cut."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
