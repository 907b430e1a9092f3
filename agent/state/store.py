"""Durable agent state in one SQLite database (WAL mode) under ``state_dir``.

Survives kill -9 and power cuts: every write is a committed transaction, and the WAL is
fsynced before the write returns, which is what ``synchronous=FULL`` does. The store does
that fsync itself (SQLite runs ``synchronous=NORMAL``) so that the deciding thread can
make a turn's records durable with one fsync at the end of the turn instead of one per
record (:meth:`StateStore.batch`), run by the ``state-sync`` thread once the daemon has
started it (:meth:`StateStore.sync_batches_behind`). A power cut before that fsync loses
the turn's last records, never one from the middle: SQLite recovers the WAL up to its
first frame that does not check out. Modules that own their own tables (the media cache
index) create them through :meth:`StateStore.ensure_schema` and use
:meth:`StateStore.transaction`.

A full disk: beside the database lies a reserve file of ``reserve_bytes``. When the file
system is nearly full (:meth:`StateStore.maintain`, once a second) or a write fails for
space, the reserve is released, so play reports, fault records and acks still have room
while the cache and recordings are evicted; it is put back once space returns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.worker import Worker
from agent.state.durable import fsync_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,       -- 'report' (POST /reports) or 'mqtt' (events, acks)
    kind TEXT NOT NULL,          -- play, fault, status, event:<type>, ack
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_channel ON outbox(channel, seq);
CREATE TABLE IF NOT EXISTS seen_commands (
    id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
"""

log = logging.getLogger(__name__)

STATE_DB = "agent.db"  # the database's file name in state_dir
RESERVE_FILE = "reserve"  # beside the database
RESERVE_BYTES = 8 * 1024 * 1024  # a day of reports and acks at a busy controller's rate
# The database never grows past this (SQLite's max_page_count): the outbox, the play journal
# (400 days) and the cache index of a busy controller take about a quarter of it.
MAX_DB_BYTES = 128 * 1024 * 1024
# SQLite's page cache. Its default (2 MiB) filled as plays were logged, some 100 KB of the
# agent's RSS per 100 tracks (bench_footprint), for a database read mostly at its ends.
CACHE_KIB = 512

# Record kinds that the bounded outbox never drops (mqtt.md: never play or fault records).
_PRECIOUS_KINDS = ("play", "fault", "event:play_finished", "event:fault_raised",
                   "event:fault_cleared", "ack")
# Acks of rejected commands: dropped before anything else, sent after everything else, so
# a flood of bad commands can neither push out nor hold up the acks of good ones.
REJECTED_ACK = "ack:rejected"


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    channel: str
    kind: str
    payload: dict[str, Any]
    created: float


class StateStore:
    def __init__(self, path: Path, outbox_max: int = 10_000,
                 reserve_bytes: int = RESERVE_BYTES, max_db_bytes: int = MAX_DB_BYTES,
                 sync: Callable[[int], None] = os.fsync) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.outbox_max = outbox_max
        self.reserve_path = path.parent / RESERVE_FILE
        self.reserve_bytes = reserve_bytes
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        self._db.execute(f"PRAGMA max_page_count={max(1, max_db_bytes // page_size)}")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._sync = sync
        self._batch = threading.local()  # .open, .written: this thread's batch
        self._wal = -1  # the WAL's descriptor, fsynced after commits; -1: SQLite syncs
        self._syncer: _WalSyncer | None = None  # fsyncs batches when started
        (mode,) = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
        # Without WAL (a file system without shared memory for its index) SQLite syncs.
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if mode == 'wal' else 'FULL'}")
        self.ensure_schema(_SCHEMA)  # in WAL mode its first write creates the WAL file
        if mode == "wal":
            self._wal = os.open(f"{path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            self._sync(self._wal)
            fsync_dir(path.parent)
        self.maintain()

    # --- the free-space reserve --------------------------------------------------------
    @property
    def reserve_released(self) -> bool:
        return self.reserve_bytes > 0 and not self.reserve_path.exists()

    def free_bytes(self) -> int:
        """Free space on the state file system (the reserve checks and Status)."""
        return shutil.disk_usage(self.path.parent).free

    def release_reserve(self) -> bool:
        """Give the reserve's space to the database; False when it was already given."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.warning("state file system full: the %d-byte reserve is released",
                    self.reserve_bytes)
        return True

    def maintain(self) -> None:
        """Release the reserve when the file system is nearly full; put it back when
        twice its size is free again."""
        if self.reserve_bytes <= 0:
            return
        free = self.free_bytes()
        if self.reserve_path.exists():
            if free < self.reserve_bytes:
                self.release_reserve()
        elif free >= 2 * self.reserve_bytes:
            self._write_reserve()

    def _write_reserve(self) -> None:
        tmp = self.reserve_path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                os.fsync(f.fileno())
            tmp.replace(self.reserve_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("state reserve not written: %s", exc)

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
            self._flush()
        with self._lock:
            self._db.close()
            if self._wal >= 0:
                os.close(self._wal)
                self._wal = -1

    def ensure_schema(self, sql: str) -> None:
        with self._lock:
            self._db.executescript(sql)
        self._committed()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction, durable when the block ends (or, inside
        :meth:`batch`, when the batch ends); the connection is only valid inside."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): the error that
                # says so must not be hidden behind "cannot rollback".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        self._committed()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The transactions this thread commits inside the block become durable together
        at its end, with one fsync (the deciding thread's turn). Other threads' writes
        stay durable one by one; a nested batch joins the outer one."""
        if getattr(self._batch, "open", False):
            yield
            return
        self._batch.open, self._batch.written = True, False
        try:
            yield
        finally:
            self._batch.open = False
            if self._batch.written:
                if self._syncer is None:
                    self._flush()
                else:
                    self._syncer.request()

    def sync_batches_behind(self) -> None:
        """From now on a batch's fsync runs on the ``state-sync`` thread: the turn does
        not wait for the disk, and its records are durable a few milliseconds after it
        (until :meth:`close`, which makes all of them durable)."""
        if self._syncer is None and self._wal >= 0:
            self._syncer = _WalSyncer(self._flush)
            self._syncer.start()

    def _committed(self) -> None:
        if getattr(self._batch, "open", False):
            self._batch.written = True
        else:
            self._flush()

    def _flush(self) -> None:
        if self._wal >= 0:
            self._sync(self._wal)

    # --- key/value -------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        # ASCII escapes: a value may hold what UTF-8 cannot encode (a schedule document
        # with a lone surrogate in a program that is skipped), and must still be kept.
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)",
                       (key, json.dumps(value)))

    def delete(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM kv WHERE key=?", (key,))

    # --- outbox ----------------------------------------------------------------------
    def enqueue(self, channel: str, kind: str, payload: dict[str, Any], created: float) -> int:
        """Append a record; past ``outbox_max`` records in the channel, drop the oldest
        droppable ones (rejected-command acks first, then status-only records). Precious
        records are never dropped."""
        return self.enqueue_many(channel, kind, [payload], created)[0]

    def enqueue_many(self, channel: str, kind: str, payloads: list[dict[str, Any]],
                     created: float,
                     alongside: Callable[[sqlite3.Connection], None] | None = None
                     ) -> list[int]:
        """``enqueue`` for several records of one kind, in one transaction (one fsync);
        ``alongside`` writes in the same transaction what must never be durable without
        these records, nor they without it."""
        seqs: list[int] = []
        with self.transaction() as db:
            if alongside is not None:
                alongside(db)
            for payload in payloads:
                cur = db.execute(
                    "INSERT INTO outbox(channel, kind, payload, created) VALUES (?, ?, ?, ?)",
                    (channel, kind, json.dumps(payload, ensure_ascii=False), created))
                assert cur.lastrowid is not None
                seqs.append(cur.lastrowid)
            (depth,) = db.execute("SELECT COUNT(*) FROM outbox WHERE channel=?",
                                  (channel,)).fetchone()
            excess = depth - self.outbox_max
            if excess > 0:
                marks = ",".join("?" * len(_PRECIOUS_KINDS))
                db.execute(
                    f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE channel=? "
                    f"AND kind NOT IN ({marks}) ORDER BY kind != ?, seq LIMIT ?)",
                    (channel, *_PRECIOUS_KINDS, REJECTED_ACK, excess))
        return seqs

    def pending(self, channel: str, limit: int = 100) -> list[OutboxRecord]:
        """The next records to send: in order, acks of rejected commands last."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, channel, kind, payload, created FROM outbox WHERE channel=? "
                "ORDER BY kind = ?, seq LIMIT ?", (channel, REJECTED_ACK, limit)).fetchall()
        return [OutboxRecord(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def ack(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])

    def depth(self, channel: str) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE channel=?",
                                    (channel,)).fetchone()
        return int(n)

    # --- command replay protection -----------------------------------------------------
    def remember_command(self, command_id: str, seen_at: float) -> bool:
        """Record a command id; False when it was already seen (a replay)."""
        with self.transaction() as db:
            cur = db.execute("INSERT OR IGNORE INTO seen_commands(id, seen_at) VALUES (?, ?)",
                             (command_id, seen_at))
            return cur.rowcount == 1

    def forget_commands_before(self, cutoff: float) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM seen_commands WHERE seen_at < ?", (cutoff,))


class _WalSyncer(Worker):
    """Makes the deciding thread's batches durable behind it: one fsync for all the
    batches that ended since the last one."""

    thread_name = "state-sync"

    def __init__(self, flush: Callable[[], None]) -> None:
        super().__init__()
        self._flush = flush
        self._due = threading.Event()

    def request(self) -> None:
        self._due.set()

    def _end_waits(self) -> None:
        self._due.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._due.wait()
            self._due.clear()
            try:
                self._flush()
            except OSError:
                log.exception("state: the WAL could not be synced")
