"""Durable agent state in one SQLite database (WAL mode) under ``state_dir``.

Survives kill -9 and power cuts: every write is a committed transaction with
``synchronous=FULL``. Modules that own their own tables (the media cache index) create
them through :meth:`StateStore.ensure_schema` and use :meth:`StateStore.transaction`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

STATE_DB = "agent.db"  # the database's file name in state_dir

# Record kinds that the bounded outbox never drops (mqtt.md: never play or fault records).
_PRECIOUS_KINDS = ("play", "fault", "event:play_finished", "event:fault_raised",
                   "event:fault_cleared", "ack")


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    channel: str
    kind: str
    payload: dict[str, Any]
    created: float


class StateStore:
    def __init__(self, path: Path, outbox_max: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.outbox_max = outbox_max
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self.ensure_schema(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ensure_schema(self, sql: str) -> None:
        with self._lock:
            self._db.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction; the connection is only valid inside the block."""
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
        droppable (status-only) ones. Precious records are never dropped."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO outbox(channel, kind, payload, created) VALUES (?, ?, ?, ?)",
                (channel, kind, json.dumps(payload, ensure_ascii=False), created))
            seq = cur.lastrowid
            (depth,) = db.execute("SELECT COUNT(*) FROM outbox WHERE channel=?",
                                  (channel,)).fetchone()
            excess = depth - self.outbox_max
            if excess > 0:
                marks = ",".join("?" * len(_PRECIOUS_KINDS))
                db.execute(
                    f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE channel=? "
                    f"AND kind NOT IN ({marks}) ORDER BY seq LIMIT ?)",
                    (channel, *_PRECIOUS_KINDS, excess))
        assert seq is not None
        return seq

    def pending(self, channel: str, limit: int = 100) -> list[OutboxRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, channel, kind, payload, created FROM outbox WHERE channel=? "
                "ORDER BY seq LIMIT ?", (channel, limit)).fetchall()
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
