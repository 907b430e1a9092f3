"""StateStore on a full disk: SQLite's own error comes through, and the store works again
once there is room (found by the simulation, tests/simulation)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.state.store import StateStore


def test_a_full_disk_fails_the_write_with_its_own_error_then_the_store_works_again(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path / "agent.db")
    with store.transaction() as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for _ in range(100):
            store.enqueue("report", "play", {"text": "x" * 3000}, 0.0)
    with store.transaction() as db:
        db.execute("PRAGMA max_page_count=1000000")
    store.put("k", "\ud800")  # a lone surrogate, kept as an escape
    assert store.get("k") == "\ud800"
