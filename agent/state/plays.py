"""The durable play journal: what aired, per activation and item, with its outcome.

One row per play of an item, written when its first sample left the card (outcome NULL:
on air) and completed when it ends. It is what makes "nothing airs twice" hold across
restarts and power cuts (the control loop asks :meth:`PlayJournal.aired` before an
occurrence may play again), and it is the record the ``report`` command counts from.
A row still NULL at start-up was cut by a crash or a power cut: it is reported
``stopped`` and kept as ``interrupted``, which the arbiter resumes by the late-start rules.

Rows are kept :data:`RETENTION_S` (one reporting year plus margin); at about 300 bytes a
play and a few hundred plays a day that is a few tens of megabytes at most.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agent.core.arbiter import AiredItem, Outcome
from agent.state.store import StateStore

RETENTION_S = 400 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plays (
    report_id TEXT PRIMARY KEY,
    activation TEXT NOT NULL,     -- occurrence key (program@start) or cmd:<command id>
    item INTEGER NOT NULL,        -- index of the item in the activation
    program_id TEXT NOT NULL,
    source TEXT NOT NULL,         -- media, stream, fm, tts, line_in
    priority TEXT NOT NULL,
    started_at REAL NOT NULL,     -- Unix time of the first sample on the card
    ended_at REAL,                -- NULL while on air, or when cut by a crash
    played_s REAL,
    outcome TEXT,                 -- completed, preempted, stopped, failed, or interrupted
                                  -- (cut by a crash); NULL while on air
    record TEXT NOT NULL          -- the proof-of-play record of source-api.md (JSON)
);
CREATE INDEX IF NOT EXISTS plays_activation ON plays(activation, item);
CREATE INDEX IF NOT EXISTS plays_started ON plays(started_at);
"""


@dataclass(frozen=True)
class Play:
    activation: str
    item: int
    started_at: float
    ended_at: float | None
    outcome: str | None
    record: dict[str, Any]


class PlayJournal:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        store.ensure_schema(_SCHEMA)

    def on_air(self, activation: str, item: int, record: dict[str, Any],
               started_at: float) -> None:
        """The item's first sample left the card (``record`` is its proof of play so far)."""
        with self._store.transaction() as db:
            self.write_on_air(db, activation, item, record, started_at)

    @staticmethod
    def write_on_air(db: sqlite3.Connection, activation: str, item: int,
                     record: dict[str, Any], started_at: float) -> None:
        """:meth:`on_air` inside a transaction of the caller's (Journal.event_with)."""
        db.execute(
            "INSERT OR REPLACE INTO plays(report_id, activation, item, program_id, source,"
            " priority, started_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record["id"], activation, item, record["program_id"], record["source"],
             record["priority"], started_at, json.dumps(record, ensure_ascii=False)))

    def ended(self, record: dict[str, Any], ended_at: float, outcome: str | None = None
              ) -> None:
        """The play of ``record["id"]`` is over with ``outcome`` for what airs again
        (by default the reported ``record["outcome"]``)."""
        with self._store.transaction() as db:
            db.execute(
                "UPDATE plays SET ended_at=?, played_s=?, outcome=?, record=? WHERE report_id=?",
                (ended_at, record["played_s"], outcome or record["outcome"],
                 json.dumps(record, ensure_ascii=False), record["id"]))

    def interrupted(self, record: dict[str, Any]) -> None:
        """A play found on air at start-up: cut by a crash or power cut at an unknown time."""
        with self._store.transaction() as db:
            db.execute(
                "UPDATE plays SET ended_at=started_at, played_s=?, outcome='interrupted',"
                " record=? WHERE report_id=?",
                (record["played_s"], json.dumps(record, ensure_ascii=False), record["id"]))

    def cut_by_crash(self) -> list[Play]:
        """Plays left on air by a crash or a power cut (read at start-up)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT activation, item, started_at, ended_at, outcome, record FROM plays"
                " WHERE outcome IS NULL ORDER BY started_at").fetchall()
        return [_play(row) for row in rows]

    def aired(self, activation: str) -> dict[int, AiredItem]:
        """Per item index, its latest play in this activation (the last written: after a
        step of the wall clock back, the latest play may carry the earlier time)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT item, outcome, started_at FROM plays WHERE activation=?"
                " ORDER BY rowid", (activation,)).fetchall()
        return {item: AiredItem(_outcome(outcome), started_at)
                for item, outcome, started_at in rows}

    def between(self, start: float, end: float) -> list[Play]:
        """Plays whose first sample is in [start, end), in the order they began (time
        order, unless the wall clock stepped back in between)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT activation, item, started_at, ended_at, outcome, record FROM plays"
                " WHERE started_at >= ? AND started_at < ? ORDER BY rowid",
                (start, end)).fetchall()
        return [_play(row) for row in rows]

    def prune(self, now: float) -> int:
        """Forget plays older than the retention; returns how many."""
        with self._store.transaction() as db:
            cur = db.execute("DELETE FROM plays WHERE started_at < ?", (now - RETENTION_S,))
        return cur.rowcount


def _outcome(stored: str | None) -> Outcome | None:
    if stored in ("completed", "preempted", "stopped", "failed"):
        return stored  # type: ignore[return-value]
    return None  # on air, or interrupted by a crash


def _play(row: tuple[Any, ...]) -> Play:
    activation, item, started_at, ended_at, outcome, record = row
    return Play(activation, item, started_at, ended_at, outcome, json.loads(record))
