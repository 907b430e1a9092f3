"""SyncService against the real simulator: the last good schedule always stays in force.

Every failure of the source (tests/e2e/test_faults.py keeps one of them end to end) is
classified here against the real HTTP server: its fault code, raised and cleared, and the
``fault`` report queued for the source, checked against the contract's schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.schedule import Schedule
from agent.source.sync import KEY_DOC, KEY_ETAG, KEY_VERSION, SyncService, backoff_delay
from agent.state.journal import MQTT, REPORT
from tests.support.schemas import validate
from tests.support.source_sim import (
    DEVICE,
    SourceRig,
    add_media,
    media_bytes,
    schedule_doc,
    source_rig,
    write_schedule,
)


class Applied:
    """The daemon's on_applied callback: records what was handed over."""

    def __init__(self) -> None:
        self.versions: list[int] = []
        self.schedules: list[Schedule] = []
        self.event = threading.Event()

    def __call__(self, schedule: Schedule) -> None:
        self.versions.append(schedule.version)
        self.schedules.append(schedule)
        self.event.set()


class RigOptions(TypedDict, total=False):
    """The options of source_rig that these tests set."""

    signing_key: Ed25519PrivateKey | None
    public_key: bytes | None
    read_timeout_s: float


class DocOptions(TypedDict, total=False):
    """schedule_doc's keyword options."""

    start: str
    extra_programs: list[dict[str, Any]] | None
    timezone: str


@contextmanager
def sync_rig(tmp_path: Path,
             **rig_args: Unpack[RigOptions]) -> Iterator[tuple[SourceRig, SyncService, Applied]]:
    with source_rig(tmp_path, **rig_args) as rig:
        applied = Applied()
        service = SyncService(rig.client, rig.cache(), rig.store, rig.journal, rig.faults,
                              rig.clock, device_id=DEVICE, default_tz="Asia/Ho_Chi_Minh",
                              poll_interval_s=60, max_backoff_s=30, on_applied=applied)
        yield rig, service, applied


def events(rig: SourceRig, type_: str) -> list[dict[str, Any]]:
    return [r.payload for r in rig.store.pending(MQTT, 1000) if r.kind == f"event:{type_}"]


def fault_reports(rig: SourceRig, code: str) -> list[dict[str, Any]]:
    """The ``fault`` reports queued for the source about ``code``, each checked against
    the contract's schema (the daemon subscribes the journal to the fault registry)."""
    reports = [r.payload for r in rig.store.pending(REPORT, 1000)
               if r.kind == "fault" and r.payload["code"] == code]
    for report in reports:
        validate("report", report)
    return reports


def publish(rig: SourceRig, version: int, n_media: int = 1,
            **doc_args: Unpack[DocOptions]) -> dict[str, Any]:
    media = [add_media(rig.content, f"m-{i}", media_bytes(20_000, seed=i), duration_s=1.0)
             for i in range(n_media)]
    doc = schedule_doc(version, DEVICE, media, **doc_args)
    write_schedule(rig.content, doc)
    return doc


def test_apply_persist_and_cache_media(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        doc = publish(rig, 5, n_media=2)
        assert service.run_once()
        assert applied.versions == [5]
        assert rig.store.get(KEY_DOC) == doc and rig.store.get(KEY_VERSION) == 5
        assert rig.store.get(KEY_ETAG)
        assert [e["version"] for e in events(rig, "schedule_applied")] == [5]
        assert sorted(e["media_id"] for e in events(rig, "media_cached")) == ["m-0", "m-1"]
        status = service.status()
        assert (status.reachable, status.schedule_version) == (True, 5)
        assert status.last_sync_at == rig.clock.now()
        assert rig.raised() == {}


def test_unchanged_schedule_is_not_downloaded_again(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        publish(rig, 1)
        assert service.run_once() and service.run_once() and service.run_once()
        requests = rig.sim.stats()["requests"]
        assert (requests["schedule_200"], requests["schedule_304"]) == (1, 2)
        assert requests["media"] == 1
        assert applied.versions == [1]


def test_media_are_fetched_most_urgent_first(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, _):
        # ManualClock starts at 15:00 Asia/Ho_Chi_Minh: m-late plays at 23:00, m-soon at 16:00
        late = add_media(rig.content, "m-late", media_bytes(1000, 1), duration_s=1.0)
        soon = add_media(rig.content, "m-soon", media_bytes(1000, 2), duration_s=1.0)
        doc = schedule_doc(1, DEVICE, [late], start="23:00:00", extra_programs=[
            {"id": "p-2", "source": {"type": "media", "items": ["m-soon"]},
             "start": "16:00:00"}])
        doc["media"].append(soon)
        write_schedule(rig.content, doc)
        assert service.run_once()
        assert [e["media_id"] for e in events(rig, "media_cached")] == ["m-soon", "m-late"]


def test_lower_version_is_ignored(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        publish(rig, 7)
        service.run_once()
        publish(rig, 6)
        assert not service.run_once()
        assert applied.versions == [7] and rig.store.get(KEY_VERSION) == 7
        assert "version 6" in rig.raised()["schedule_rollback"]
        publish(rig, 8)
        assert service.run_once()
        assert applied.versions == [7, 8] and "schedule_rollback" not in rig.raised()


@pytest.mark.parametrize("case", ["unsigned", "wrong key"])
def test_unsigned_or_badly_signed_schedule_is_never_applied(tmp_path: Path, case: str) -> None:
    signer = Ed25519PrivateKey.generate()
    trusted = signer if case == "unsigned" else Ed25519PrivateKey.generate()
    public = trusted.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    with sync_rig(tmp_path, signing_key=signer, public_key=public) as (rig, service, applied):
        rig.sim.set_faults(sign=case != "unsigned")
        publish(rig, 1)
        assert not service.run_once()
        assert applied.versions == [] and rig.store.get(KEY_DOC) is None
        assert "schedule_signature" in rig.raised()
        assert rig.sim.stats()["requests"].get("media", 0) == 0


def test_signed_schedule_is_applied(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    with sync_rig(tmp_path, signing_key=key, public_key=public) as (rig, service, applied):
        publish(rig, 1)
        assert service.run_once() and applied.versions == [1]


SCHEDULE_SWITCHES = [
    ({"schedule_status": 500}, "source_unreachable"),
    ({"schedule_status": 503}, "source_unreachable"),
    ({"schedule_status": 401}, "source_auth"),
    ({"schedule_status": 403}, "source_auth"),
    ({"schedule_status": 404}, "source_unknown_device"),
    ({"garbage_json": True}, "source_bad_response"),
    ({"slow_s": 1.0}, "source_unreachable"),
]
MEDIA_SWITCHES = [
    ({"media_status": 500}, "source_unreachable"),
    ({"media_status": 403}, "source_auth"),
    ({"media_status": 404}, "source_bad_response"),
    ({"wrong_hash": True}, "media_corrupt"),
    ({"truncate": True}, "source_unreachable"),
]
SWITCHES_OFF = {"schedule_status": None, "media_status": None, "garbage_json": False,
                "slow_s": 0.0, "wrong_hash": False, "truncate": False}


@pytest.mark.parametrize(("switches", "code"), SCHEDULE_SWITCHES)
def test_schedule_fault_switch_raises_its_code_and_keeps_last_good(tmp_path: Path,
                                                                   switches: dict[str, object],
                                                                   code: str) -> None:
    with sync_rig(tmp_path, read_timeout_s=0.3) as (rig, service, applied):
        rig.faults.subscribe(rig.journal.on_fault)
        publish(rig, 1)
        assert service.run_once()
        publish(rig, 2)
        rig.sim.set_faults(**switches)
        assert not service.run_once()
        assert set(rig.raised()) == {code}
        assert applied.versions == [1] and rig.store.get(KEY_VERSION) == 1
        assert service.status().reachable is (code != "source_unreachable")
        [raised] = fault_reports(rig, code)
        assert raised["cleared_at"] is None
        rig.sim.set_faults(**SWITCHES_OFF)
        assert service.run_once()
        assert applied.versions == [1, 2] and rig.raised() == {}
        assert [r["cleared_at"] is None for r in fault_reports(rig, code)] == [True, False]


@pytest.mark.parametrize(("switches", "code"), MEDIA_SWITCHES)
def test_media_fault_switch_raises_its_code_and_retries(tmp_path: Path, switches: dict[str, object],
                                                        code: str) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        doc = publish(rig, 1, n_media=2)
        rig.sim.set_faults(**switches)
        assert not service.run_once()
        assert set(rig.raised()) == {code}
        assert applied.versions == [1]
        assert service.status().reachable is (code != "source_unreachable")
        assert events(rig, "media_cached") == []
        rig.sim.set_faults(**SWITCHES_OFF)
        assert service.run_once()
        assert rig.raised() == {}
        assert sorted(e["media_id"] for e in events(rig, "media_cached")) == \
            sorted(m["id"] for m in doc["media"])


def test_invalid_programs_are_skipped_and_named(tmp_path: Path) -> None:
    """A program naming a media the schedule does not list is left out, named in the fault
    (and its report to the source), and the rest of the schedule is applied and cached."""
    with sync_rig(tmp_path) as (rig, service, applied):
        rig.faults.subscribe(rig.journal.on_fault)
        media = add_media(rig.content, "m-0", media_bytes(1000), duration_s=1.0)
        doc = schedule_doc(1, DEVICE, [media], extra_programs=[
            {"id": "p-bad", "source": {"type": "media", "items": ["m-unknown"]},
             "start": "07:00:00"}])
        write_schedule(rig.content, doc, check=False)
        assert service.run_once()
        assert applied.versions == [1]
        assert [p.id for p in applied.schedules[0].programs] == ["p-1"]
        assert [e["media_id"] for e in events(rig, "media_cached")] == ["m-0"]
        assert "p-bad" in rig.raised()["schedule_invalid_program"]
        [report] = fault_reports(rig, "schedule_invalid_program")
        assert "p-bad" in report["message"]


@pytest.mark.parametrize("doc", [
    [1, 2, 3],
    {"version": "seven", "device_id": DEVICE},
    {"version": 3, "device_id": "somebody-else", "media": [], "programs": []},
])
def test_unusable_document_is_rejected_as_a_whole(tmp_path: Path, doc: Any) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        publish(rig, 1)
        service.run_once()
        write_schedule(rig.content, doc, check=False)
        assert not service.run_once()
        assert applied.versions == [1] and "schedule_invalid" in rig.raised()


def test_applied_schedule_survives_restart(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, _):
        publish(rig, 4)
        service.run_once()
        rig.sim.set_faults(schedule_status=503)
        again = SyncService(rig.client, rig.cache(), rig.store, rig.journal, rig.faults,
                            rig.clock, device_id=DEVICE, default_tz="Asia/Ho_Chi_Minh",
                            poll_interval_s=60, max_backoff_s=30, on_applied=Applied())
        loaded = again.load_applied()
        assert loaded is not None and loaded.version == 4
        assert not again.run_once()
        assert again.status().schedule_version == 4


def test_an_older_schedule_met_after_a_restart_is_a_rollback(tmp_path: Path) -> None:
    """A restarted agent (a new SyncService on the same state) whose source now serves an
    older version than the one it applied keeps the applied one: ``schedule_rollback``."""
    with sync_rig(tmp_path) as (rig, service, _):
        publish(rig, 5)
        assert service.run_once()
        publish(rig, 4)
        applied = Applied()
        again = SyncService(rig.client, rig.cache(), rig.store, rig.journal, rig.faults,
                            rig.clock, device_id=DEVICE, default_tz="Asia/Ho_Chi_Minh",
                            poll_interval_s=60, max_backoff_s=30, on_applied=applied)
        loaded = again.load_applied()
        assert loaded is not None and loaded.version == 5
        assert not again.run_once()
        assert "version 4" in rig.raised()["schedule_rollback"]
        assert applied.versions == [] and rig.store.get(KEY_VERSION) == 5
        assert again.status().schedule_version == 5


def test_thread_polls_on_demand_and_stops(tmp_path: Path) -> None:
    with sync_rig(tmp_path) as (rig, service, applied):
        publish(rig, 1)
        service.start()
        try:
            assert applied.event.wait(5)
            applied.event.clear()
            publish(rig, 2)
            service.sync_now()
            assert applied.event.wait(5)
        finally:
            service.stop(timeout=5)
        assert applied.versions == [1, 2]
        assert not any(t.name == "sync" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("failures", [1, 3, 10, 50])
def test_backoff_is_full_jitter_capped(failures: int) -> None:
    cap = 30.0
    ceiling = min(cap, 2.0 ** failures)
    assert backoff_delay(failures, cap, lambda: 0.0) == 0.0
    assert backoff_delay(failures, cap, lambda: 0.5) == pytest.approx(ceiling / 2)
    assert backoff_delay(failures, cap, lambda: 0.999) <= cap
