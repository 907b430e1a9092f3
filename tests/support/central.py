"""The central server's side of MQTT for end-to-end tests and benches: a real broker
account (``central``) that signs and publishes commands and collects what the agent says
(acks, events, status), without losing any of it to a consumer that was not looking."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import canonical_json, public_key_b64, public_key_of, sign
from tests.support.mosquitto import PREFIX, Mosquitto, Received, TestClient

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def agent_mqtt_config(broker: Mosquitto, device_id: str, key: Ed25519PrivateKey | None,
                      tls: bool = False) -> dict[str, Any]:
    """The ``mqtt`` config section of an agent on ``broker`` (signed commands with ``key``)."""
    section: dict[str, Any] = {
        "brokers": [broker.tls_uri if tls else broker.uri], "username": device_id,
        "password": broker.passwords[device_id], "heartbeat_s": 5,
        "command_public_key": None if key is None else public_key_b64(public_key_of(key))}
    if tls:
        section["ca_file"] = str(broker.ca_file)
    return {"mqtt": section}


class Central:
    """Subscribed to one device's state, events and acks; keeps every message received."""

    def __init__(self, broker: Mosquitto, device_id: str, key: Ed25519PrivateKey | None,
                 tls: bool = False) -> None:
        self.base = f"{PREFIX}/devices/{device_id}"
        self.device_id = device_id
        self._key = key
        self._client: TestClient = broker.client(tls=tls)
        self.received: list[Received] = []

    def __enter__(self) -> Central:
        self._client.connect()
        for leaf in ("state", "events", "acks"):
            self._client.subscribe(f"{self.base}/{leaf}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _drain(self) -> None:
        while True:
            try:
                self.received.append(self._client.messages.get_nowait())
            except queue.Empty:
                return

    def payloads(self, leaf: str) -> list[Any]:
        """Every JSON payload received so far on ``<device>/<leaf>``, in order."""
        self._drain()
        return [m.json() for m in self.received if m.topic == f"{self.base}/{leaf}"]

    def wait(self, leaf: str, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """The first payload on ``leaf`` (already received or to come) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in self.payloads(leaf) if predicate(p)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing matching on {leaf} within {timeout} s; got "
                                   f"{self.payloads(leaf)[-5:]}")
            time.sleep(0.02)

    def wait_online(self, timeout: float = 20.0) -> None:
        self.wait("state", lambda s: s.get("online") is True, timeout)

    def command(self, type_: str, args: dict[str, Any] | None = None,
                expires_in_s: float = 120.0, to: str | None = None) -> dict[str, Any]:
        """A command of mqtt.md for this device (or ``to``), signed when this central has
        a key."""
        now = datetime.now(TZ)
        cmd: dict[str, Any] = {
            "id": str(uuid.uuid4()), "type": type_, "args": args or {},
            "to": to or self.device_id,
            "issued_at": now.isoformat(timespec="milliseconds"),
            "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(
                timespec="milliseconds")}
        if self._key is not None:
            cmd["signature"] = sign(cmd, self._key)
        return cmd

    def send(self, cmd: dict[str, Any]) -> float:
        """Publish ``cmd`` to the device (QoS 1); returns the wall time of the publish call."""
        payload = canonical_json(cmd)
        published_at = time.time()
        self._client.publish(f"{self.base}/commands", payload)
        return published_at

    def acks(self, command_id: str) -> list[str]:
        return [a["status"] for a in self.payloads("acks") if a["command_id"] == command_id]

    def wait_ack(self, command_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        ack: dict[str, Any] = self.wait(
            "acks", lambda a: a["command_id"] == command_id and a["status"] == status, timeout)
        return ack
