"""The durable play journal: rows on air, ended, cut by a crash, by activation, by time."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.core.arbiter import AiredItem
from agent.core.clock import ManualClock
from agent.state.journal import MQTT, Journal
from agent.state.plays import RETENTION_S, PlayJournal
from agent.state.store import StateStore


def record(report_id: str, program_id: str = "p-1", **extra: object) -> dict[str, object]:
    return {"id": report_id, "program_id": program_id, "source": "media",
            "priority": "scheduled", "played_s": 0.0, "outcome": "completed", **extra}


def test_a_play_is_on_air_then_ended_and_survives_reopening(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    plays = PlayJournal(store)
    plays.on_air("p-1@100", 0, record("r-1"), started_at=100.0)
    assert plays.aired("p-1@100") == {0: AiredItem(None, 100.0)}
    plays.ended(record("r-1", played_s=30.0, outcome="completed"), ended_at=130.0)
    plays.on_air("p-1@100", 1, record("r-2"), started_at=130.0)
    store.close()

    reopened = PlayJournal(StateStore(tmp_path / "state.db"))
    assert reopened.aired("p-1@100") == {0: AiredItem("completed", 100.0),
                                         1: AiredItem(None, 130.0)}
    (cut,) = reopened.cut_by_crash()
    assert (cut.activation, cut.item, cut.record["id"]) == ("p-1@100", 1, "r-2")
    reopened.interrupted({**cut.record, "outcome": "stopped"})
    assert reopened.cut_by_crash() == []
    assert reopened.aired("p-1@100")[1] == AiredItem(None, 130.0)
    assert reopened.aired("p-2@100") == {}


def test_the_latest_play_of_an_item_wins(tmp_path: Path) -> None:
    plays = PlayJournal(StateStore(tmp_path / "state.db"))
    plays.on_air("p-1@100", 0, record("r-1"), started_at=100.0)
    plays.ended(record("r-1", outcome="preempted"), ended_at=110.0)
    plays.on_air("p-1@100", 0, record("r-2"), started_at=200.0)
    plays.ended(record("r-2", outcome="completed"), ended_at=230.0)
    assert plays.aired("p-1@100") == {0: AiredItem("completed", 200.0)}


def test_between_and_prune(tmp_path: Path) -> None:
    plays = PlayJournal(StateStore(tmp_path / "state.db"))
    for n, at in enumerate((10.0, 20.0, 30.0)):
        plays.on_air(f"p-{n}@{at:.0f}", 0, record(f"r-{n}", f"p-{n}"), started_at=at)
    assert [p.record["program_id"] for p in plays.between(15.0, 31.0)] == ["p-1", "p-2"]
    assert plays.prune(now=25.0 + RETENTION_S) == 2
    assert [p.item for p in plays.between(0.0, 100.0)] == [0]


# --- a play on air and its play_started event, written together ---------------------------

def _journal_and_plays(tmp_path: Path) -> tuple[StateStore, Journal, PlayJournal]:
    store = StateStore(tmp_path / "state.db")
    return store, Journal(store, ManualClock(100.0), ZoneInfo("UTC")), PlayJournal(store)


def _refuse_outbox(store: StateStore, refuse: bool) -> None:
    """What a power cut between two writes would leave, as a write that fails."""
    with store.transaction() as db:
        if refuse:
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                       "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            db.execute("DROP TRIGGER refuse")


def _start(journal: Journal, plays: PlayJournal, report_id: str) -> None:
    journal.event_with(
        lambda db: plays.write_on_air(db, "p-1@100", 0, record(report_id), 100.0),
        "play_started", program_id="p-1")


def test_a_play_is_never_on_air_without_its_play_started_event(tmp_path: Path) -> None:
    store, journal, plays = _journal_and_plays(tmp_path)
    _refuse_outbox(store, True)
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        _start(journal, plays, "r-1")
    assert plays.cut_by_crash() == [] and store.pending(MQTT) == []

    _refuse_outbox(store, False)
    _start(journal, plays, "r-1")
    assert [p.record["id"] for p in plays.cut_by_crash()] == ["r-1"]
    assert [r.payload["type"] for r in store.pending(MQTT)] == ["play_started"]


def test_behind_records_held_in_memory_the_event_keeps_its_place(tmp_path: Path) -> None:
    store, journal, plays = _journal_and_plays(tmp_path)
    _refuse_outbox(store, True)
    journal.event("fault_raised", code="state_write_failed")
    assert journal.held == 1
    _start(journal, plays, "r-1")  # the play is on air; its event waits behind the first
    assert [p.record["id"] for p in plays.cut_by_crash()] == ["r-1"]
    assert journal.held == 2

    _refuse_outbox(store, False)
    journal.retry()
    assert [r.payload["type"] for r in store.pending(MQTT)] == ["fault_raised", "play_started"]
