"""MqttLink: the agent's MQTT session (mqtt.md): Status up, events and acks up, commands down.

Threads: ``mqtt-link`` (connects, rotates brokers with backoff and jitter, publishes
Status), ``mqtt-outbox`` (agent.mqtt.outbox: drains the durable ``mqtt`` outbox in order,
deleting a record only after the broker's PUBACK) and paho's network thread of the current
session. Each connection attempt uses a fresh paho client (brokers may mix mqtt:// and
mqtts://), with paho's own reconnect off: this module decides where and when to reconnect.

Delivery is at least once: a record whose PUBACK was lost with the connection is sent
again after reconnecting; events carry an ``id`` and acks a ``command_id`` + ``status``
for the central server to de-duplicate.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.addresses import BrokerUri, parse_broker_uri
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.http.metrics import AgentMetrics
from agent.mqtt.intake import CommandIntake
from agent.mqtt.outbox import OutboxSender
from agent.mqtt.session import IDLE_POLL_S, Session, Topics
from agent.state.journal import MQTT, Journal
from agent.state.store import StateStore
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

STATUS_MIN_INTERVAL_S = 1.0  # bursts of status changes are coalesced to one Status a second


@dataclass(frozen=True)
class MqttSettings:
    brokers: tuple[str, ...]  # mqtt://host[:port] or mqtts://host[:port], tried in turn
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # private CA for mqtts://; None = the system's CAs
    client_cert: Path | None = None
    client_key: Path | None = None
    topic_prefix: str = "tt"
    heartbeat_s: float = 60.0
    keepalive_s: float = 30.0
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    connect_timeout_s: float = 10.0  # TCP + TLS + CONNACK + SUBACK
    publish_timeout_s: float = 10.0  # PUBACK of one outbox record
    session_expiry_s: int = 3600  # MQTT 5: how long the broker keeps commands for us


class MqttLink:
    def __init__(self, settings: MqttSettings, device_id: str, groups: tuple[str, ...],
                 store: StateStore, journal: Journal, clock: Clock,
                 status_provider: Callable[[], dict[str, Any]], intake: CommandIntake,
                 faults: FaultRegistry, metrics: AgentMetrics) -> None:
        if not settings.brokers:
            raise ValueError("MqttLink needs at least one broker")
        self._settings = settings
        self._brokers = [parse_broker_uri(uri) for uri in settings.brokers]
        self._device_id = device_id
        self.topics = Topics.for_device(settings.topic_prefix, device_id, groups)
        self._clock = clock
        self._status_provider = status_provider
        self._intake = intake
        self._faults = faults
        self._metrics = metrics
        self._offline = json.dumps({"device_id": device_id, "online": False}).encode()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the mqtt-link thread has something to look at
        self._status_pending = False
        self._session: Session | None = None  # set while connected and subscribed
        self._ready = threading.Event()
        self._stop_deadline = 0.0
        self._random = random.Random()
        self._threads: list[threading.Thread] = []
        self._outbox = OutboxSender(
            store, journal, clock, faults, intake, self.topics,
            publish_timeout_s=settings.publish_timeout_s,
            max_backoff_s=settings.max_backoff_s, stopping=self._stopping,
            connected=self._connected_session)
        metrics.mqtt_connected(False)
        metrics.watch_outbox(MQTT, lambda: store.depth(MQTT))

    @property
    def connected(self) -> bool:
        """Connected to a broker and subscribed to the command topics."""
        return self._ready.is_set()

    def start(self) -> None:
        self._intake.start()
        self._threads = [NamedThread(target=self._supervise, name="mqtt-link", daemon=True),
                         NamedThread(target=self._outbox.run, name="mqtt-outbox",
                                     daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline Status (when connected), disconnect, join the threads."""
        self._stop_deadline = self._clock.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, self._stop_deadline - self._clock.monotonic()))
        self._intake.stop(max(0.0, self._stop_deadline - self._clock.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("MQTT threads still running after stop: %s", ", ".join(alive))

    def _connected_session(self, timeout: float) -> Session | None:
        """The session while connected and subscribed; otherwise None, after waiting up to
        ``timeout`` for a connection (the mqtt-outbox thread)."""
        session = self._session
        if session is None or not self._ready.is_set():
            self._ready.wait(timeout)
            return None
        return session

    def status_changed(self) -> None:
        """Publish a Status soon; bursts of changes make one Status."""
        self._status_pending = True
        self._wake.set()

    # --- connection supervision (mqtt-link thread) ---------------------------------------
    def _supervise(self) -> None:
        index, failures, backoff = 0, 0, self._settings.min_backoff_s
        errors: dict[str, str] = {}
        while not self._stopping.is_set():
            broker = self._brokers[index]
            session: Session | None = None
            try:
                session = self._open(broker)
            except Exception as exc:  # a bug (ours or paho's): a failed attempt like any other
                self._faults.internal_error(f"MQTT connection to {self._uri(broker)}", exc)
                error = f"internal error: {type(exc).__name__}: {exc}"
            if session is not None and self._await_subscribed(session):
                failures, backoff = 0, self._settings.min_backoff_s
                errors.clear()
                self._serve(session)
                pause = self._random.uniform(0, self._settings.min_backoff_s)
            elif self._stopping.is_set():
                pause = 0.0
            else:
                if session is not None:
                    error = session.error
                failures += 1
                errors[self._uri(broker)] = error
                log.warning("MQTT broker %s: %s", self._uri(broker), error)
                if failures >= len(self._brokers):
                    self._faults.raise_("mqtt_unreachable", "; ".join(
                        f"{uri}: {reason}" for uri, reason in errors.items()))
                index = (index + 1) % len(self._brokers)
                pause = 0.0
                if index == 0:  # a whole round failed: back off with jitter
                    pause = self._random.uniform(backoff / 2, backoff)
                    backoff = min(backoff * 2, self._settings.max_backoff_s)
            if session is not None:
                self._close(session)
            self._stopping.wait(pause)

    @staticmethod
    def _uri(broker: BrokerUri) -> str:
        return f"{broker.scheme}://{broker.host}:{broker.port}"

    def _open(self, broker: BrokerUri) -> Session:
        """Connect (TCP, TLS, CONNECT sent) and start paho's loop; on failure the session
        comes back already ended."""
        settings = self._settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self._device_id,
                             clean_session=None if settings.protocol == "5" else False,
                             protocol=paho.MQTTv5 if settings.protocol == "5" else paho.MQTTv311,
                             reconnect_on_failure=False)
        session = Session(broker, client)
        client.user_data_set(session)
        client.connect_timeout = settings.connect_timeout_s
        client.enable_logger(log)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if broker.scheme == "mqtts":
            try:
                client.tls_set_context(self._tls_context())
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                session.error = f"TLS setup failed: {exc}"
                self._faults.raise_("mqtt_tls", f"{self._uri(broker)}: cannot set up TLS "
                                    f"(mqtt.ca_file, client_cert, client_key): {exc}")
                session.ended.set()
                return session
            self._faults.clear("mqtt_tls")
        client.will_set(self.topics.state, self._offline, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        try:
            if settings.protocol == "5":
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = settings.session_expiry_s
                client.connect(broker.host, broker.port, round(settings.keepalive_s),
                               clean_start=False, properties=properties)
            else:
                client.connect(broker.host, broker.port, round(settings.keepalive_s))
        except (OSError, ValueError) as exc:  # ssl errors are OSErrors or ValueErrors
            session.error = f"cannot connect: {exc}"
            session.ended.set()
            return session
        client.loop_start()
        return session

    def _tls_context(self) -> ssl.SSLContext:
        """Read again at every attempt: a fixed file is picked up without a restart."""
        settings = self._settings
        context = ssl.create_default_context(
            cafile=None if settings.ca_file is None else str(settings.ca_file))
        if settings.client_cert is not None:
            context.load_cert_chain(
                str(settings.client_cert),
                None if settings.client_key is None else str(settings.client_key))
        return context

    def _await_subscribed(self, session: Session) -> bool:
        deadline = self._clock.monotonic() + self._settings.connect_timeout_s
        while not (self._stopping.is_set() or session.ended.is_set()):
            if session.subscribed.is_set():
                return True
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                session.error = "no CONNACK/SUBACK in time"
                return False
            self._wake.wait(min(remaining, IDLE_POLL_S))
            self._wake.clear()
        return False

    def _serve(self, session: Session) -> None:
        """Connected: birth Status, then Status on change and every heartbeat_s."""
        log.info("MQTT connected to %s", self._uri(session.broker))
        self._session = session
        self._ready.set()
        self._metrics.mqtt_connected(True)
        self._faults.clear("mqtt_unreachable")
        self._status_pending = True
        last_status = -STATUS_MIN_INTERVAL_S - 1.0
        while not (self._stopping.is_set() or session.ended.is_set()):
            now = self._clock.monotonic()
            since = now - last_status
            if (self._status_pending and since >= STATUS_MIN_INTERVAL_S) \
                    or since >= self._settings.heartbeat_s:
                self._status_pending = False
                self._publish_status(session)
                last_status = now
                continue
            due = self._settings.heartbeat_s - since
            if self._status_pending:
                due = min(due, STATUS_MIN_INTERVAL_S - since)
            self._wake.wait(due)
            self._wake.clear()
        self._ready.clear()
        self._session = None
        self._metrics.mqtt_connected(False)
        if self._stopping.is_set() and not session.ended.is_set():
            self._say_offline(session)
        else:
            log.warning("MQTT connection to %s lost: %s", self._uri(session.broker),
                        session.error)

    def _publish_status(self, session: Session) -> None:
        try:
            status = {**self._status_provider(), "device_id": self._device_id, "online": True}
            payload = json.dumps(status, ensure_ascii=False).encode("utf-8")
        except Exception:
            log.exception("status provider failed; Status not published")
            return
        session.client.publish(self.topics.state, payload, qos=1, retain=True)

    def _say_offline(self, session: Session) -> None:
        info = session.client.publish(self.topics.state, self._offline, qos=1, retain=True)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            info.wait_for_publish(max(0.1, self._stop_deadline - self._clock.monotonic() - 0.5))

    def _close(self, session: Session) -> None:
        session.client.disconnect()
        session.client.loop_stop()

    # --- paho callbacks (paho's thread) -----------------------------------------------------
    def _on_connect(self, client: paho.Client, session: Session, _flags: paho.ConnectFlags,
                    reason: ReasonCode, _properties: Properties | None) -> None:
        if reason.is_failure:
            session.error = f"connection refused: {reason}"
            session.ended.set()
            self._wake.set()
            return
        _, session.subscribe_mid = client.subscribe([(t, 1) for t in self.topics.commands])

    def _on_subscribe(self, _client: paho.Client, session: Session, mid: int,
                      reasons: list[ReasonCode], _properties: Properties | None) -> None:
        if mid != session.subscribe_mid:
            return
        refused = [t for t, r in zip(self.topics.commands, reasons, strict=False) if r.is_failure]
        if refused:  # commands on those topics would never arrive: not connected
            session.error = (f"the broker refused the subscription to {', '.join(refused)} "
                             "(check its ACL)")
            session.ended.set()
        else:
            session.subscribed.set()
        self._wake.set()

    def _on_disconnect(self, _client: paho.Client, session: Session,
                       _flags: paho.DisconnectFlags, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        if not session.ended.is_set():
            session.error = f"disconnected: {reason}"
        session.ended.set()
        if self._session is session:
            self._ready.clear()
        self._wake.set()

    def _on_message(self, _client: paho.Client, _session: Session,
                    message: paho.MQTTMessage) -> None:
        if message.topic not in self.topics.commands:
            log.warning("ignoring MQTT message on unexpected topic %s", message.topic)
            return
        try:
            self._intake.handle(bytes(message.payload))
        except Exception as exc:
            self._faults.internal_error(f"handling a command on {message.topic}", exc)
