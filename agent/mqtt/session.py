"""What the MQTT link's threads share: the device's topics, and the session of one
connection attempt (its paho client and what paho's callbacks have seen)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import paho.mqtt.client as paho

from agent.config.addresses import BrokerUri

IDLE_POLL_S = 0.5  # the longest a link thread waits before it looks again


@dataclass(frozen=True)
class Topics:
    state: str
    events: str
    acks: str
    commands: tuple[str, ...]  # the device's own, then one per group

    @classmethod
    def for_device(cls, prefix: str, device_id: str, groups: tuple[str, ...]) -> Topics:
        base = f"{prefix}/devices/{device_id}"
        return cls(f"{base}/state", f"{base}/events", f"{base}/acks",
                   (f"{base}/commands", *(f"{prefix}/groups/{g}/commands" for g in groups)))


class Session:
    """One connection attempt: its paho client and what its callbacks have seen."""

    def __init__(self, broker: BrokerUri, client: paho.Client) -> None:
        self.broker = broker
        self.client = client
        self.subscribe_mid: int | None = None
        self.subscribed = threading.Event()
        self.ended = threading.Event()
        self.error = "no answer"
