"""Where the media cache keeps what it holds: its index, the table ``media_cache`` of the
agent's StateStore, and its files under ``cache.dir``: ``<sha[:2]>/<sha>`` holds verified
files (playable), ``partial/<sha>.part`` downloads in progress (agent/source/cache_partial.py).

A file is published only once verified: fsync the file, rename it into place, fsync both
directories. So a published file is always complete and never written again (a player may
hold it open). At start the index is reconciled with what is on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from agent.core.clock import Clock
from agent.state.durable import fsync_dir
from agent.state.store import StateStore

log = logging.getLogger("agent.source.cache")  # one logger for all of the cache's modules

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
_SHA256 = re.compile(r"[0-9a-f]{64}$")


@dataclass(frozen=True)
class IndexRow:
    sha256: str
    media_id: str
    size: int
    state: str
    durable_bytes: int
    last_used: float


class CacheStorage:
    """The index and the files. No lock of its own: MediaCache's lock keeps apart what
    must not interleave."""

    def __init__(self, state: StateStore, directory: Path, clock: Clock) -> None:
        self.state = state  # the index's database; its kv also serves the downloads
        self.directory = directory
        self._clock = clock
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        state.ensure_schema(_SCHEMA)

    @property
    def partial_dir(self) -> Path:
        return self.directory / "partial"

    def final(self, sha: str) -> Path:
        return self.directory / sha[:2] / sha

    def part(self, sha: str) -> Path:
        return self.partial_dir / f"{sha}.part"

    # --- index -----------------------------------------------------------------------
    def rows(self) -> list[IndexRow]:
        with self.state.transaction() as db:
            found = db.execute("SELECT sha256, media_id, size, state, durable_bytes, last_used "
                               "FROM media_cache").fetchall()
        return [IndexRow(*r) for r in found]

    def row(self, sha: str) -> IndexRow | None:
        with self.state.transaction() as db:
            found = db.execute("SELECT sha256, media_id, size, state, durable_bytes, last_used "
                               "FROM media_cache WHERE sha256=?", (sha,)).fetchone()
        return None if found is None else IndexRow(*found)

    def set(self, sha: str, **columns: object) -> None:
        assignments = ", ".join(f"{name}=?" for name in columns)
        with self.state.transaction() as db:
            db.execute(f"UPDATE media_cache SET {assignments} WHERE sha256=?",
                       (*columns.values(), sha))

    def add_partial(self, sha: str, media_id: str, size: int) -> None:
        """A download about to start from nothing: a .part left over has an unknown durable
        length, so it goes."""
        self.part(sha).unlink(missing_ok=True)
        with self.state.transaction() as db:
            db.execute("INSERT INTO media_cache(sha256, media_id, size, state, durable_bytes, "
                       "last_used) VALUES (?, ?, ?, 'partial', 0, ?)",
                       (sha, media_id, size, self._clock.now()))

    def forget(self, sha: str) -> None:
        """Delete a file (verified or partial) and its index row."""
        self.final(sha).unlink(missing_ok=True)
        self.part(sha).unlink(missing_ok=True)
        with self.state.transaction() as db:
            db.execute("DELETE FROM media_cache WHERE sha256=?", (sha,))

    # --- files -----------------------------------------------------------------------
    def publish(self, sha: str, size: int) -> Path:
        """Rename a verified .part into place, durably, and list it as ready."""
        final = self.final(sha)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.part(sha), final)
        fsync_dir(final.parent)
        fsync_dir(self.partial_dir)
        self.set(sha, state="ready", durable_bytes=size, last_used=self._clock.now())
        return final

    # --- consistency -----------------------------------------------------------------
    def reconcile(self) -> None:
        """Make the index and the files agree (after a crash or a hand-edited disk)."""
        rows = {r.sha256: r for r in self.rows()}
        for row in rows.values():
            final, part = self.final(row.sha256), self.part(row.sha256)
            if row.state == "ready" and not (final.is_file()
                                             and final.stat().st_size == row.size):
                log.warning("cache: %s (media %s) is gone or damaged; dropped",
                            row.sha256, row.media_id)
                self.forget(row.sha256)
            elif row.state == "partial" and not part.exists():
                self.set(row.sha256, durable_bytes=0)
        for stray in self.partial_dir.iterdir():
            owner = rows.get(stray.name.removesuffix(".part"))
            if owner is None or owner.state != "partial" or stray.suffix != ".part":
                log.info("cache: removing stray partial file %s", stray)
                stray.unlink()
        for bucket in self.directory.iterdir():
            if bucket == self.partial_dir or not bucket.is_dir():
                continue
            for file in bucket.iterdir():
                listed = rows.get(file.name)
                if listed is None or listed.state != "ready":
                    self._adopt_or_remove(file, listed)

    def _adopt_or_remove(self, file: Path, row: IndexRow | None) -> None:
        """A published file the index does not list (the crash hit between the rename and
        the index update): keep it if its content matches its name."""
        if _SHA256.match(file.name) and file.parent.name == file.name[:2] \
                and hash_file(file) == file.name:
            size = file.stat().st_size
            with self.state.transaction() as db:
                db.execute("INSERT OR REPLACE INTO media_cache(sha256, media_id, size, state, "
                           "durable_bytes, last_used) VALUES (?, ?, ?, 'ready', ?, ?)",
                           (file.name, row.media_id if row else "", size, size,
                            self._clock.now()))
            self.part(file.name).unlink(missing_ok=True)
            log.info("cache: adopted %s", file)
            return
        log.warning("cache: removing unlisted file %s", file)
        file.unlink()


def hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
