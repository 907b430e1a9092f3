"""Uploads the ``report`` outbox channel to ``POST /devices/{id}/reports``.

At-least-once: a record leaves the outbox only when the server lists its id as accepted;
the server de-duplicates by id. Records go in outbox order, at most ``batch_size`` at a time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from agent.core.faults import FaultRegistry
from agent.core.worker import Worker
from agent.source.client import SourceClient, SourceError
from agent.source.sync import backoff_delay
from agent.state.journal import REPORT, Journal
from agent.state.store import StateStore

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 1.0  # upper bound on the wait for new records (Journal.wait can be missed)


class ReportUploader(Worker):
    thread_name = "reports"

    def __init__(self, store: StateStore, journal: Journal, client: SourceClient,
                 faults: FaultRegistry, *, max_backoff_s: float, batch_size: int = 100,
                 rand: Callable[[], float] = random.random) -> None:
        super().__init__()
        self._store = store
        self._journal = journal
        self._client = client
        self._faults = faults
        self.max_backoff_s = max_backoff_s
        self.batch_size = batch_size
        self._rand = rand

    def _end_waits(self) -> None:
        self._journal.notify()

    def upload_once(self) -> tuple[int, int]:
        """POST one batch; (records sent, records accepted and removed from the outbox).

        Raises SourceError when the POST fails; nothing is removed then."""
        records = self._store.pending(REPORT, self.batch_size)
        if not records:
            return 0, 0
        accepted = self._client.post_reports([r.payload for r in records])
        done = [r.seq for r in records if r.payload.get("id") in accepted]
        self._store.ack(done)
        if len(done) < len(records):
            log.warning("source accepted %d of %d reports; the rest stay queued",
                        len(done), len(records))
        return len(records), len(done)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                sent, accepted = self.upload_once()
            except SourceError as exc:
                log.warning("report upload failed (%d queued): %s",
                            self._store.depth(REPORT), exc)
                sent, accepted = 1, 0
            except Exception as exc:  # the thread must go on: report and back off
                self._faults.internal_error("report upload", exc)
                sent, accepted = 1, 0
            if sent == 0:
                self._journal.wait(_IDLE_WAIT_S)
            elif accepted < sent:
                failures += 1
                self._stopping.wait(backoff_delay(failures, self.max_backoff_s, self._rand))
            else:
                failures = 0
