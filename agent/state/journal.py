"""The agent's outgoing record stream: events (MQTT), acks (MQTT) and reports (source API).

Everything the agent tells the outside world goes through the Journal into the durable
outbox of the StateStore, so nothing is lost across broker or source outages, restarts
and power cuts. Consumers (MqttLink, ReportUploader) drain their channel in order and wait
on :meth:`Journal.wait` for new records.

A record that cannot be written (the state file system is full even after its reserve was
released) is never dropped: it waits in memory, in order, with fault
``state_write_failed`` raised, and goes to the outbox with the next write or
:meth:`Journal.retry` once there is room.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.core.clock import Clock
from agent.core.faults import Fault
from agent.state.store import REJECTED_ACK, StateStore

log = logging.getLogger(__name__)

MQTT = "mqtt"
REPORT = "report"


def rfc3339(epoch: float, tz: ZoneInfo) -> str:
    """Unix seconds as RFC 3339 with the offset of ``tz`` and millisecond precision."""
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="milliseconds")


class Journal:
    def __init__(self, store: StateStore, clock: Clock, tz: ZoneInfo,
                 mqtt_enabled: bool = True) -> None:
        self._store = store
        self._clock = clock
        self.tz = tz
        # With MQTT off (no brokers) events and acks have no reader: they are not queued,
        # or the outbox would fill with records nobody will ever take.
        self.mqtt_enabled = mqtt_enabled
        self._changed = threading.Condition()
        # Set when recording: the start (RFC 3339) of the off-air recording segment that
        # holds a moment, for the play reports' recording_segment (source-api.md).
        self.recording_segment: Callable[[float], str | None] | None = None
        # Records not yet durable: (channel, kind, records, created), oldest first.
        self._held: deque[tuple[str, str, list[dict[str, Any]], float]] = deque()
        self._held_lock = threading.RLock()
        self._failing = False
        # Told (held records, the error) when records are held and (0, None) when none are
        # any longer: the daemon raises and clears state_write_failed with it.
        self.on_write_failure: Callable[[int, Exception | None], None] | None = None

    def stamp(self, epoch: float) -> str:
        return rfc3339(epoch, self.tz)

    def _new_event(self, type_: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """An MQTT Event (mqtt.md) made now, and now."""
        now = self._clock.now()
        return {"id": str(uuid.uuid4()), "type": type_, "at": self.stamp(now), **body}, now

    def event(self, type_: str, **body: Any) -> dict[str, Any]:
        """Queue an MQTT Event (mqtt.md) and return it."""
        record, now = self._new_event(type_, body)
        if self.mqtt_enabled:
            self._persist(MQTT, f"event:{type_}", [record], now)
        return record

    def event_with(self, write: Callable[[sqlite3.Connection], None], type_: str,
                   **body: Any) -> dict[str, Any]:
        """:meth:`event`, in one transaction with ``write``: a state change that a power
        cut must never leave durable without its event (nor the event without it). Raises
        as ``write`` would when the store cannot write, with nothing of either written.
        Only while older records wait in memory (:attr:`held`) do the two go separately:
        the event must follow them."""
        record, now = self._new_event(type_, body)
        with self._held_lock:
            if self.mqtt_enabled and not self._held:
                self._store.enqueue_many(MQTT, f"event:{type_}", [record], now,
                                         alongside=write)
                self.notify()
                return record
            with self._store.transaction() as db:
                write(db)
        if self.mqtt_enabled:
            self._persist(MQTT, f"event:{type_}", [record], now)
        return record

    def ack(self, command_id: str, status: str, reason: str | None = None) -> dict[str, Any]:
        now = self._clock.now()
        record = {"command_id": command_id, "status": status, "reason": reason,
                  "at": self.stamp(now)}
        if self.mqtt_enabled:
            self._persist(MQTT, "ack", [record], now)
        return record

    def rejected(self, rejections: list[tuple[str, str, float]]) -> None:
        """Acks of rejected commands, ``(command_id, reason, at)`` each, in one write; the
        outbox drops them first and sends them last."""
        if not self.mqtt_enabled or not rejections:
            return
        records = [{"command_id": command_id, "status": "rejected", "reason": reason,
                    "at": self.stamp(at)} for command_id, reason, at in rejections]
        self._persist(MQTT, REJECTED_ACK, records, self._clock.now())

    def report(self, type_: str, report_id: str | None = None, **body: Any) -> dict[str, Any]:
        """Queue a Report for POST /reports (source-api.md) and return it."""
        now = self._clock.now()
        record = {"id": report_id or str(uuid.uuid4()), "type": type_, "at": self.stamp(now),
                  **body}
        self._persist(REPORT, type_, [record], now)
        return record

    def played(self, record: dict[str, Any]) -> None:
        """One proof-of-play record: a ``play`` report and a ``play_finished`` event. The
        record's ``id``, fixed when the item started, is the report's: were the same play
        reported twice (a power cut between two writes), the source de-duplicates it."""
        body = {k: v for k, v in record.items() if k != "id"}
        if self.recording_segment is not None and "recording_segment" not in body:
            segment = self.recording_segment(
                datetime.fromisoformat(body["started_at"]).timestamp())
            if segment is not None:
                body["recording_segment"] = segment
        report = self.report("play", record.get("id"), **body)
        self.event("play_finished", record={**body, "id": report["id"]})

    def on_fault(self, change: str, fault: Fault, cleared_at: float | None) -> None:
        """FaultRegistry listener: an event and a ``fault`` report for each change."""
        body = {"code": fault.code, "message": fault.message,
                "raised_at": self.stamp(fault.since),
                "cleared_at": None if cleared_at is None else self.stamp(cleared_at)}
        self.event("fault_raised" if change == "raised" else "fault_cleared",
                   severity=fault.severity, **body)
        self.report("fault", **body)

    def _persist(self, channel: str, kind: str, records: list[dict[str, Any]],
                 created: float) -> None:
        with self._held_lock:
            self._held.append((channel, kind, records, created))
            self.retry()

    @property
    def held(self) -> int:
        """Records waiting in memory for room in the state store."""
        with self._held_lock:
            return sum(len(records) for _, _, records, _ in self._held)

    def retry(self) -> None:
        """Write the held records, oldest first; those that still fail stay held."""
        error: Exception | None = None
        with self._held_lock:
            while self._held:
                channel, kind, records, created = self._held[0]
                try:
                    self._store.enqueue_many(channel, kind, records, created)
                except sqlite3.Error as exc:  # SQLITE_FULL, or an I/O error
                    if self._store.release_reserve():
                        continue
                    error = exc
                    break
                self._held.popleft()
            held = self.held
            began, recovered = error is not None and not self._failing, \
                error is None and self._failing
            self._failing = error is not None
        if began:
            log.error("%d records held in memory: the state store cannot write (%s)",
                      held, error)
        if self.on_write_failure is not None and (error is not None or recovered):
            self.on_write_failure(held, error)
        self.notify()

    def notify(self) -> None:
        """Wake the readers waiting in :meth:`wait`."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Block until a record is queued or ``timeout`` passes."""
        with self._changed:
            self._changed.wait(timeout)
