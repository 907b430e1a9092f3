"""Fixtures of the unit tests: a real Mosquitto (tests/support/mqtt_rig.py), real decoder
worker processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import pytest

from agent.playout.decoder import DecoderPool
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_rig import DEVICES, GROUP, Agent, AgentFactory, AgentOptions


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto.start(tmp_path_factory.mktemp("mosquitto"),
                                {d: [GROUP] for d in DEVICES})
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that this test may stop and restart."""
    mosquitto = Mosquitto.start(tmp_path / "mosquitto", {d: [GROUP] for d in DEVICES})
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[AgentFactory]:
    started: list[Agent] = []

    def make(broker: Mosquitto, device_id: str, db: Path | None = None,
             **kw: Unpack[AgentOptions]) -> Agent:
        agent = Agent(broker, db or tmp_path / f"{device_id}-{len(started)}.db", device_id, **kw)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.close()


@pytest.fixture
def decoder_pool() -> Iterator[DecoderPool]:
    """libvlc decoder workers at 48 kHz, one kept warm."""
    decoders = DecoderPool(48000, time.monotonic)
    decoders.warm_up()
    yield decoders
    decoders.close()
