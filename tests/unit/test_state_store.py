"""A full state store loses nothing: the reserve gives room first, then records wait in
memory, in order, with the failure told, until there is room again."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.core.clock import ManualClock
from agent.state.journal import MQTT, REPORT, Journal
from agent.state.store import RESERVE_FILE, StateStore

RESERVE = 64 * 1024
SMALL_DB = 96 * 1024  # a few dozen records fill it: SQLite then answers SQLITE_FULL


def _store(tmp_path: Path, **kwargs: Any) -> StateStore:
    return StateStore(tmp_path / "agent.db", reserve_bytes=RESERVE, **kwargs)


def test_the_reserve_is_written_beside_the_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert (tmp_path / RESERVE_FILE).stat().st_size == RESERVE
    assert not store.reserve_released


def test_the_reserve_is_released_once_and_put_back_when_space_returns(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.release_reserve()
    assert store.reserve_released and not store.release_reserve()
    store.maintain()  # this file system has room: the reserve comes back
    assert not store.reserve_released


def test_no_reserve_when_disabled(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "agent.db", reserve_bytes=0)
    store.maintain()
    assert not (tmp_path / RESERVE_FILE).exists() and not store.reserve_released


def test_a_full_store_holds_records_in_order_and_writes_them_when_room_returns(
        tmp_path: Path) -> None:
    store = _store(tmp_path, max_db_bytes=SMALL_DB)
    journal = Journal(store, ManualClock(), ZoneInfo("Asia/Ho_Chi_Minh"))
    told: list[tuple[int, bool]] = []
    journal.on_write_failure = lambda held, error: told.append((held, error is not None))
    sent: list[dict[str, Any]] = []
    while journal.held == 0:
        sent.append(journal.report("play", program_id=f"p-{len(sent)}", text="x" * 500))
    journal.ack("c-1", "completed")
    more = [journal.report("play", program_id=f"q-{n}") for n in range(3)]
    assert journal.held == 5, "nothing is dropped: the report, the ack, three more"
    assert store.reserve_released, "the reserve was given up before holding records"
    assert told[0] == (1, True) and told[-1] == (5, True)

    written = store.pending(REPORT, 10_000)
    store.ack([r.seq for r in written])  # the uploader drained the outbox: room again
    journal.retry()
    assert journal.held == 0 and told[-1] == (0, False)
    ids = [r.payload["id"] for r in written + store.pending(REPORT, 10_000)]
    assert ids == [r["id"] for r in sent + more], "every report once, in order"
    assert [r.payload["command_id"] for r in store.pending(MQTT)] == ["c-1"]


def test_nothing_is_told_while_writes_succeed(tmp_path: Path) -> None:
    journal = Journal(_store(tmp_path), ManualClock(), ZoneInfo("Asia/Ho_Chi_Minh"))
    told: list[int] = []
    journal.on_write_failure = lambda held, error: told.append(held)
    for n in range(3):
        journal.report("play", program_id=f"p-{n}")
    journal.retry()
    assert told == [] and journal.held == 0
