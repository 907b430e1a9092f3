"""Fixtures of the e2e tests: a Mosquitto broker (TLS, passwords, ACL) and the central
server's client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.central_checks import DEVICE, GROUP, OTHER_DEVICE, CheckedCentral
from tests.support.mosquitto import Mosquitto, TestClient


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto.start(tmp_path / "mosquitto", {DEVICE: [GROUP], OTHER_DEVICE: []})
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def central(broker: Mosquitto) -> Iterator[CheckedCentral]:
    with CheckedCentral(broker) as client:
        yield client


@pytest.fixture
def raw_client(broker: Mosquitto) -> Iterator[TestClient]:
    """The central's account, publishing anything anywhere."""
    client = broker.client(tls=True)
    client.connect()
    yield client
    client.close()
