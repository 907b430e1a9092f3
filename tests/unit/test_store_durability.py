"""When StateStore's writes reach the disk: each one before it returns, or a batch's all
together at the batch's end (the deciding thread's turn), with one fsync of the WAL."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent.state.store import StateStore


class SyncLog:
    """An fsync that counts its calls, then does its work."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, descriptor: int) -> None:
        self.calls += 1
        os.fsync(descriptor)


def _store(tmp_path: Path) -> tuple[StateStore, SyncLog]:
    syncs = SyncLog()
    store = StateStore(tmp_path / "agent.db", reserve_bytes=0, sync=syncs)
    syncs.calls = 0
    return store, syncs


def test_a_write_outside_a_batch_is_synced_before_it_returns(tmp_path: Path) -> None:
    store, syncs = _store(tmp_path)
    store.put("a", 1)
    assert syncs.calls == 1
    store.enqueue("report", "play", {"n": 1}, 0.0)
    assert syncs.calls == 2
    assert store.get("a") == 1  # a read needs no sync
    assert syncs.calls == 2


def test_a_batch_makes_its_writes_durable_with_one_sync_at_its_end(tmp_path: Path) -> None:
    store, syncs = _store(tmp_path)
    with store.batch():
        for n in range(5):
            store.put(f"k{n}", n)
            store.enqueue("report", "play", {"n": n}, 0.0)
        with store.batch():  # a nested batch joins the outer one
            store.put("inner", True)
        assert syncs.calls == 0
        assert store.get("k4") == 4  # the batch reads its own writes
    assert syncs.calls == 1
    store.close()
    reopened = StateStore(tmp_path / "agent.db", reserve_bytes=0)
    assert [reopened.get(f"k{n}") for n in range(5)] == list(range(5))
    assert reopened.get("inner") is True and reopened.depth("report") == 5


def test_a_batch_without_writes_syncs_nothing(tmp_path: Path) -> None:
    store, syncs = _store(tmp_path)
    with store.batch():
        store.get("a")
        store.pending("report")
    assert syncs.calls == 0


def test_another_threads_write_during_a_batch_is_synced_at_once(tmp_path: Path) -> None:
    store, syncs = _store(tmp_path)
    with store.batch():
        store.put("turn", 1)
        other = threading.Thread(target=store.put, args=("outbox", 2), name="other-writer")
        other.start()
        other.join(timeout=10)
        assert not other.is_alive()
        assert syncs.calls == 1  # the other thread's, which carries the batch's so far
    assert syncs.calls == 2
    assert store.get("turn") == 1 and store.get("outbox") == 2


def test_batches_synced_behind_are_durable_soon_after_and_all_at_close(
        tmp_path: Path) -> None:
    store, syncs = _store(tmp_path)
    store.sync_batches_behind()
    with store.batch():
        store.put("turn", 1)
    deadline = time.monotonic() + 10
    while syncs.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert syncs.calls == 1  # on the state-sync thread, after the batch returned
    store.put("outside", 2)  # a write outside a batch still waits for its own
    assert syncs.calls == 2
    with store.batch():
        store.put("last", 3)
    store.close()  # stops the thread and syncs what is left
    assert syncs.calls >= 3
    assert "state-sync" not in {thread.name for thread in threading.enumerate()}
