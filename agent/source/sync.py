"""The polling loop: fetch the schedule, apply it, then cache the media it needs.

The last good schedule always stays in force: a new one is applied only when it is
signed (if a key is set), parses, is meant for this device and is not older than the
applied one. The applied document and its ETag are kept in the StateStore, so after a
restart the device plays on before the source answers.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.core.schedule import Schedule
from agent.core.schedule_parser import ScheduleError, parse_schedule
from agent.core.worker import Worker
from agent.source.cache import CacheError, MediaCache
from agent.source.client import ScheduleFetch, SourceClient, SourceError
from agent.state.journal import Journal
from agent.state.store import StateStore

log = logging.getLogger(__name__)

KEY_DOC = "schedule.doc"
KEY_ETAG = "schedule.etag"
KEY_VERSION = "schedule.version"
KEY_LAST_SYNC = "source.last_sync_at"

# Faults about reaching the source: raised by the cycle that saw them, cleared by a
# cycle that reached the source without seeing them.
_LINK_FAULTS = ("source_unreachable", "source_auth", "source_unknown_device",
                "source_bad_response")
# Faults about the served document: cleared once the served document is the applied one.
_DOCUMENT_FAULTS = ("schedule_signature", "schedule_invalid", "schedule_rollback",
                    "schedule_too_large")
_BACKOFF_BASE_S = 1.0


@dataclass(frozen=True)
class SyncStatus:
    reachable: bool | None  # None until the first attempt
    last_sync_at: float | None  # wall time of the last successful schedule poll
    schedule_version: int | None


def backoff_delay(failures: int, cap_s: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^failures))."""
    return rand() * min(cap_s, _BACKOFF_BASE_S * 2.0 ** min(failures, 32))


class SyncService(Worker):
    thread_name = "sync"

    def __init__(self, client: SourceClient, cache: MediaCache, store: StateStore,
                 journal: Journal, faults: FaultRegistry, clock: Clock, *, device_id: str,
                 default_tz: str, poll_interval_s: float, max_backoff_s: float,
                 on_applied: Callable[[Schedule], None],
                 on_download: Callable[[str, int], None] = lambda outcome, size: None,
                 rand: Callable[[], float] = random.random) -> None:
        super().__init__()
        self._client = client
        self._cache = cache
        self._store = store
        self._journal = journal
        self._faults = faults
        self._clock = clock
        self._device_id = device_id
        self._default_tz = default_tz
        self.poll_interval_s = poll_interval_s
        self._on_download = on_download  # (outcome: ok or a fault code, bytes of the file)
        self.max_backoff_s = max_backoff_s
        self._on_applied = on_applied
        self._rand = rand
        self._applied: Schedule | None = None
        self._reachable: bool | None = None
        self._failures = 0
        self._wake = threading.Event()

    # --- lifecycle -------------------------------------------------------------------
    def load_applied(self) -> Schedule | None:
        """The schedule applied before the restart (from the StateStore), or None."""
        doc = self._store.get(KEY_DOC)
        if doc is None:
            return None
        try:
            schedule = parse_schedule(doc, self._default_tz).schedule
        except ScheduleError as exc:
            self._faults.raise_("schedule_invalid", f"the stored schedule is unusable: {exc}")
            return None
        self._applied = schedule
        self._cache.set_referenced(schedule.media.values())
        return schedule

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()  # out of the wait between polls
        super().stop(timeout)

    def sync_now(self) -> None:
        """Poll at once instead of waiting for the interval or the backoff."""
        self._wake.set()

    def status(self) -> SyncStatus:
        last = self._store.get(KEY_LAST_SYNC)
        return SyncStatus(reachable=self._reachable,
                          last_sync_at=None if last is None else float(last),
                          schedule_version=None if self._applied is None
                          else self._applied.version)

    @property
    def applied(self) -> Schedule | None:
        return self._applied

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                ok = self.run_once()
            except Exception as exc:  # the thread must go on: report and back off
                self._faults.internal_error("sync cycle", exc)
                ok = False
            self._failures = 0 if ok else self._failures + 1
            delay = (self.poll_interval_s if ok
                     else backoff_delay(self._failures, self.max_backoff_s, self._rand))
            self._wake.wait(delay)
            self._wake.clear()

    # --- one cycle -------------------------------------------------------------------
    def run_once(self) -> bool:
        """Poll the schedule, apply it if new, cache missing media. True when all went well."""
        seen: dict[str, str] = {}
        ok = True
        try:
            fetch = self._client.fetch_schedule(self._store.get(KEY_ETAG))
        except SourceError as exc:
            seen[exc.code] = exc.message
            ok = False
        else:
            self._store.put(KEY_LAST_SYNC, self._clock.now())
            ok = self._take(fetch)
        if not seen.keys() & {"source_unreachable", "source_auth", "source_unknown_device"}:
            ok = self._cache_media(seen) and ok
        self._settle_link_faults(seen)
        return ok

    def _take(self, fetch: ScheduleFetch) -> bool:
        if not fetch.changed:
            for code in _DOCUMENT_FAULTS:
                self._faults.clear(code)
            return True
        try:
            parsed = parse_schedule(fetch.document, self._default_tz)
            device = parsed.schedule.device_id
            if device and device != self._device_id:
                raise ScheduleError(f"the schedule is for device {device!r}, "
                                    f"this is {self._device_id!r}")
        except ScheduleError as exc:
            self._faults.raise_("schedule_invalid", f"schedule rejected: {exc}")
            return False
        schedule = parsed.schedule
        if self._applied is not None and schedule.version < self._applied.version:
            self._faults.raise_("schedule_rollback",
                                f"the source serves version {schedule.version}, older than "
                                f"the applied version {self._applied.version}; ignored")
            return False
        if parsed.problems:
            self._faults.raise_("schedule_invalid_program", "skipped: " + "; ".join(
                f"{pid}: {message}" for pid, message in parsed.problems))
        else:
            self._faults.clear("schedule_invalid_program")
        # ETag last: a crash before it only makes the next poll fetch and apply again.
        self._store.put(KEY_DOC, fetch.document)
        self._store.put(KEY_VERSION, schedule.version)
        self._store.put(KEY_ETAG, fetch.etag)
        for code in _DOCUMENT_FAULTS:
            self._faults.clear(code)
        self._applied = schedule
        self._cache.set_referenced(schedule.media.values())
        self._on_applied(schedule)
        self._journal.event("schedule_applied", version=schedule.version)
        log.info("applied schedule version %d (%d programs, %d media)", schedule.version,
                 len(schedule.programs), len(schedule.media))
        return True

    def _cache_media(self, seen: dict[str, str]) -> bool:
        """Download what the applied schedule needs, most urgent first."""
        schedule = self._applied
        if schedule is None:
            return True
        ok = True
        for entry in self._cache.missing(schedule.media_by_urgency(self._clock.now())):
            try:
                if self._cache.fetch(entry, self._client, self._stopping.is_set) is None:
                    return False
            except SourceError as exc:
                self._on_download(exc.code, 0)
                seen.setdefault(exc.code, exc.message)
                ok = False
                if exc.code in ("source_unreachable", "source_auth"):
                    break
                continue
            except CacheError as exc:
                self._on_download(exc.code, 0)
                ok = False
                if exc.code == "disk_full":
                    break
                continue
            self._on_download("ok", entry.size)
            self._journal.event("media_cached", media_id=entry.id, sha256=entry.sha256)
        self._cache.evict()
        return ok

    def _settle_link_faults(self, seen: dict[str, str]) -> None:
        for code in ("schedule_signature", "schedule_too_large"):
            if code in seen:
                self._faults.raise_(code, seen.pop(code))
        self._reachable = "source_unreachable" not in seen
        for code in _LINK_FAULTS:
            if code in seen:
                self._faults.raise_(code, seen[code])
            elif self._reachable:
                self._faults.clear(code)
