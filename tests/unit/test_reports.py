"""ReportUploader against the real simulator: at-least-once, in order, only accepted ids acked."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from agent.source.client import SourceError
from agent.source.reports import ReportUploader
from agent.state.journal import REPORT
from tests.support.agentproc import wait_for
from tests.support.schemas import validate
from tests.support.source_sim import SourceRig, source_rig


class UploaderOptions(TypedDict, total=False):
    """The ReportUploader option that uploader() leaves open."""

    batch_size: int


def uploader(rig: SourceRig, **kwargs: Unpack[UploaderOptions]) -> ReportUploader:
    return ReportUploader(rig.store, rig.journal, rig.client, rig.faults, max_backoff_s=1.0,
                          rand=lambda: 0.05, **kwargs)


def fault_reports(rig: SourceRig, n: int) -> list[str]:
    """Real fault reports: raised and cleared through the FaultRegistry and the Journal."""
    rig.faults.subscribe(rig.journal.on_fault)
    for i in range(n):
        rig.faults.raise_("source_unreachable", f"outage {i}")
        rig.clock.advance(1)
        rig.faults.clear("source_unreachable")
    return [r.payload["id"] for r in rig.store.pending(REPORT, 10_000)]



def test_reports_are_uploaded_once_and_removed(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        ids = fault_reports(rig, 2)
        up = uploader(rig)
        assert up.upload_once() == (4, 4)
        assert up.upload_once() == (0, 0)
        stored = rig.sim.reports()
        assert [r["id"] for r in stored] == ids
        for report in stored:
            validate("report", report)
        assert rig.store.depth(REPORT) == 0
        assert rig.sim.stats()["requests"]["reports"] == 1


def test_only_accepted_ids_leave_the_outbox(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        fault_reports(rig, 1)
        rig.store.enqueue(REPORT, "status", {"type": "status"}, rig.clock.now())  # no id
        assert uploader(rig).upload_once() == (3, 2)
        left = rig.store.pending(REPORT)
        assert [r.payload for r in left] == [{"type": "status"}]


def test_reports_stay_queued_while_the_server_fails(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        ids = fault_reports(rig, 1)
        rig.sim.set_faults(reports_status=500)
        with pytest.raises(SourceError) as err:
            uploader(rig).upload_once()
        assert err.value.code == "source_unreachable"
        assert [r.payload["id"] for r in rig.store.pending(REPORT)] == ids
        assert rig.sim.reports() == []


def test_thread_uploads_in_batches_in_order_and_retries(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        rig.sim.set_faults(reports_status=500)
        up = uploader(rig)
        up.start()
        try:
            ids = fault_reports(rig, 125)  # 250 reports
            wait_for(lambda: rig.sim.stats()["requests"].get("reports", 0) >= 2, 5)
            assert rig.store.depth(REPORT) == 250
            rig.sim.set_faults(reports_status=None)
            wait_for(lambda: rig.store.depth(REPORT) == 0, 5)
            assert [r["id"] for r in rig.sim.reports()] == ids
            more = rig.journal.report("fault", code="disk_full", message="late",
                                      raised_at=rig.journal.stamp(rig.clock.now()),
                                      cleared_at=None)
            wait_for(lambda: len(rig.sim.reports()) == 251, 5)
            assert rig.sim.reports()[-1]["id"] == more["id"]
        finally:
            up.stop(timeout=5)
        assert not any(t.name == "reports" and t.is_alive() for t in threading.enumerate())


def test_batches_hold_at_most_100_reports(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        fault_reports(rig, 60)  # 120 reports
        up = uploader(rig)
        assert up.upload_once() == (100, 100)
        assert up.upload_once() == (20, 20)
        assert len(rig.sim.reports()) == 120


def test_an_unexpected_error_is_a_fault_and_the_thread_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with source_rig(tmp_path) as rig:
        up = uploader(rig)
        calls: list[int] = []

        def broken() -> tuple[int, int]:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("disk on fire")
            up._stopping.set()
            return 0, 0

        monkeypatch.setattr(up, "upload_once", broken)
        up._run()
        assert len(calls) == 2
        assert "report upload: RuntimeError: disk on fire" in rig.raised()["internal_error"]
