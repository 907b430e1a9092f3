"""The ``mqtt-outbox`` thread of the MQTT link (agent.mqtt.link): publishes the durable
``mqtt`` outbox in order while connected, deleting a record only after the broker's
PUBACK."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import paho.mqtt.client as paho

from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.mqtt.intake import CommandIntake
from agent.mqtt.session import IDLE_POLL_S, Session, Topics
from agent.state.journal import MQTT, Journal
from agent.state.store import OutboxRecord, StateStore

_OUTBOX_WINDOW = 20  # records in flight at once (paho's default max inflight)


class OutboxSender:
    def __init__(self, store: StateStore, journal: Journal, clock: Clock,
                 faults: FaultRegistry, intake: CommandIntake, topics: Topics, *,
                 publish_timeout_s: float, max_backoff_s: float, stopping: threading.Event,
                 connected: Callable[[float], Session | None]) -> None:
        self._store = store
        self._journal = journal
        self._clock = clock
        self._faults = faults
        self._intake = intake
        self._topics = topics
        self._publish_timeout_s = publish_timeout_s
        self._max_backoff_s = max_backoff_s
        self._stopping = stopping
        self._connected = connected  # the session, or None after waiting up to timeout

    def run(self) -> None:
        # A failed round (the state disk full until its reserve is released, a moment
        # later) is tried again soon, then less often: not a whole max_backoff_s later,
        # which held every event back for a minute after one full-disk write.
        backoff = IDLE_POLL_S
        while not self._stopping.is_set():
            try:
                self._send_round()
                backoff = IDLE_POLL_S
            except Exception as exc:
                self._faults.internal_error("MQTT outbox", exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    def _send_round(self) -> None:
        self._intake.flush()
        session = self._connected(IDLE_POLL_S)
        if session is None:
            return
        records = self._store.pending(MQTT, _OUTBOX_WINDOW)
        if not records:
            self._journal.wait(IDLE_POLL_S)
            return
        delivered = self._publish_in_order(session, records)
        self._store.ack(delivered)
        if len(delivered) < len(records):
            self._stopping.wait(IDLE_POLL_S)

    def _publish_in_order(self, session: Session, records: list[OutboxRecord]) -> list[int]:
        """Publish ``records``; the seqs of the leading ones the broker acknowledged."""
        sent: list[tuple[int, paho.MQTTMessageInfo]] = []
        for record in records:
            topic = self._topics.acks if record.kind.startswith("ack") else self._topics.events
            payload = json.dumps(record.payload, ensure_ascii=False).encode("utf-8")
            info = session.client.publish(topic, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                break
            sent.append((record.seq, info))
        delivered: list[int] = []
        for seq, info in sent:
            if not self._await_puback(session, info):
                break
            delivered.append(seq)
        return delivered

    def _await_puback(self, session: Session, info: paho.MQTTMessageInfo) -> bool:
        deadline = self._clock.monotonic() + self._publish_timeout_s
        while not info.is_published():
            if session.ended.is_set() or self._stopping.is_set() \
                    or self._clock.monotonic() > deadline:
                return False
            info.wait_for_publish(0.2)
        return True
