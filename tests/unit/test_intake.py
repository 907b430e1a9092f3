"""CommandIntake: commands wait for a trusted clock off paho's thread; rejections are
cheap, batched and never crowd out good acks."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.clock import Clock, ManualClock
from agent.core.clock_trust import ClockTrust
from agent.core.faults import FaultRegistry
from agent.core.signing import public_key_of, sign
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command, CommandLimits, CommandValidator
from agent.mqtt.intake import MAX_WAITING, REJECTION_ACKS_PER_FLUSH, CommandIntake
from agent.state.journal import MQTT, Journal
from agent.state.store import REJECTED_ACK, StateStore

KEY = Ed25519PrivateKey.generate()
DEVICE = "xa-1"
WAIT_S = 30.0  # generous: a test that passes never waits for it


class ShiftedClock:
    """The device's clock: true time plus ``offset`` (negative: behind)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


class Probe:
    def __init__(self) -> None:
        self.ntp = False

    def ntp_synced(self) -> bool:
        return self.ntp

    def rtc_set_clock(self) -> bool:
        return False

    def boot_id(self) -> str | None:
        return "boot"


def command(type_: str = "emergency", args: dict[str, Any] | None = None,
            issued_at: float | None = None, signed: bool = True) -> bytes:
    issued = time.time() if issued_at is None else issued_at
    doc = {"id": str(uuid.uuid4()), "type": type_,
           "args": {"text": "Bão"} if args is None else args, "to": DEVICE,
           "issued_at": datetime.fromtimestamp(issued, UTC).isoformat(),
           "expires_at": datetime.fromtimestamp(issued + 3600, UTC).isoformat()}
    if signed:
        doc["signature"] = sign(doc, KEY)
    return json.dumps(doc).encode()


class Rig:
    def __init__(self, tmp_path: Path, clock: Clock, trusted: bool | None = False,
                 clock_wait_s: float = WAIT_S) -> None:
        self.clock = clock
        self.store = StateStore(tmp_path / "agent.db")
        self.journal = Journal(self.store, clock, ZoneInfo("UTC"))
        self.faults = FaultRegistry(clock.now)
        self.probe = Probe()
        self.trust = None if trusted is None else ClockTrust(self.probe, self.store,
                                                             self.faults, clock.now)
        if trusted:
            self.probe.ntp = True
            assert self.trust is not None and self.trust.check()
        self.commands: queue.Queue[Command] = queue.Queue()
        validator = CommandValidator(public_key_of(KEY), CommandLimits(), self.store, clock,
                                     lambda media_id: False, device_id=DEVICE)
        self.intake = CommandIntake(validator, self.journal, AgentMetrics(clock), self.faults,
                                    clock, self.commands.put, self.trust, clock_wait_s)
        self.intake.start()

    def grant_trust(self) -> None:
        self.probe.ntp = True
        assert self.trust is not None and self.trust.check()

    def acks(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.kind, r.payload) for r in self.store.pending(MQTT, 100_000)]

    def close(self) -> None:
        self.intake.stop()
        self.store.close()


def wait_until_judged(rig: Rig) -> None:
    deadline = time.monotonic() + WAIT_S
    while rig.intake.waiting:
        assert time.monotonic() < deadline, "the waiting command was never judged"
        time.sleep(0.01)


class RigOptions(TypedDict, total=False):
    """Rig's keyword options."""

    trusted: bool | None
    clock_wait_s: float


class MakeRig(Protocol):
    def __call__(self, clock: Clock, **options: Unpack[RigOptions]) -> Rig: ...


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[MakeRig]:
    made: list[Rig] = []

    def make(clock: Clock, **kw: Unpack[RigOptions]) -> Rig:
        made.append(Rig(tmp_path / str(len(made)), clock, **kw))
        return made[-1]

    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    yield make
    for rig in made:
        rig.close()


def test_a_command_waits_off_the_network_thread_and_runs_once_trusted(rigs: MakeRig) -> None:
    rig = rigs(ShiftedClock(0.0))
    rig.intake.handle(command())  # returns at once: the waiting is on another thread
    assert rig.intake.waiting == 1 and rig.commands.empty()
    rig.grant_trust()
    accepted = rig.commands.get(timeout=WAIT_S)
    assert accepted.type == "emergency"
    assert [a["status"] for _, a in rig.acks()] == ["accepted"]


def test_an_emergency_queued_during_the_outage_never_airs(rigs: MakeRig) -> None:
    """The device clock is 6 h behind; an emergency issued an hour ago (true time) looks
    5 h ahead to it. It waits; trust comes with the clock stepped right: expired."""
    clock = ShiftedClock(-6 * 3600.0)
    rig = rigs(clock)
    rig.intake.handle(command(issued_at=time.time() - 3600))
    assert rig.intake.waiting == 1
    clock.offset = 0.0  # NTP steps the clock
    rig.grant_trust()
    wait_until_judged(rig)
    rig.intake.flush()
    ((kind, ack),) = rig.acks()
    assert kind == REJECTED_ACK and ack["reason"].startswith(("too_old: ", "expired: "))
    assert rig.commands.empty()
    rig.intake.handle(command())  # a fresh one, published after trust
    assert rig.commands.get(timeout=WAIT_S).type == "emergency"


def test_a_command_that_waits_too_long_is_rejected_clock_unsynced(rigs: MakeRig) -> None:
    rig = rigs(ShiftedClock(0.0), clock_wait_s=0.2)
    rig.intake.handle(command())
    wait_until_judged(rig)
    rig.intake.flush()
    ((kind, ack),) = rig.acks()
    assert kind == REJECTED_ACK and ack["reason"].startswith("clock_unsynced: ")
    assert rig.commands.empty()


def test_stop_volume_and_amplifier_never_wait(rigs: MakeRig) -> None:
    rig = rigs(ShiftedClock(-6 * 3600.0))
    for type_, args in (("stop", {}), ("set_volume", {"volume": 20}), ("amplifier", {"on": False})):
        rig.intake.handle(command(type_, args))
    assert [rig.commands.get_nowait().type for _ in range(3)] == ["stop", "set_volume",
                                                                  "amplifier"]
    assert rig.intake.waiting == 0


def test_past_max_waiting_commands_are_rejected_at_once(rigs: MakeRig) -> None:
    rig = rigs(ShiftedClock(0.0))
    for _ in range(MAX_WAITING + 3):
        rig.intake.handle(command())
    assert rig.intake.waiting == MAX_WAITING
    rig.intake.flush()
    assert [a["reason"].split(":")[0] for _, a in rig.acks()] == ["clock_unsynced"] * 3


def test_a_flood_of_bad_commands_is_cheap_and_good_acks_go_first(rigs: MakeRig) -> None:
    clock = ManualClock(start=time.time())
    rig = rigs(clock, trusted=None)
    for _ in range(20_000):
        rig.intake.handle(command(issued_at=clock.now(), signed=False))
    good = command(issued_at=clock.now())
    rig.intake.handle(good)
    assert rig.commands.get_nowait().id == json.loads(good)["id"]
    assert rig.store.depth(MQTT) == 1  # nothing written per rejection
    for _ in range(3):
        rig.intake.flush()
        clock.advance(0.5)
    records = rig.store.pending(MQTT, 100_000)
    assert records[0].kind == "ack" and records[0].payload["status"] == "accepted"
    assert [r.kind for r in records[1:]] == [REJECTED_ACK] * (3 * REJECTION_ACKS_PER_FLUSH)
    assert rig.store.get("seen") is None
    with rig.store.transaction() as db:
        (seen,) = db.execute("SELECT COUNT(*) FROM seen_commands").fetchone()
    assert seen == 1  # only the good command


def test_rejected_acks_are_dropped_first_when_the_outbox_is_full(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "agent.db", outbox_max=100)
    store.enqueue_many(MQTT, REJECTED_ACK, [{"n": n} for n in range(100)], 0.0)
    store.enqueue(MQTT, "ack", {"good": 1}, 0.0)
    store.enqueue(MQTT, "event:media_cached", {"e": 1}, 0.0)
    kinds = [r.kind for r in store.pending(MQTT, 1000)]
    assert kinds[:2] == ["ack", "event:media_cached"]
    assert kinds[2:] == [REJECTED_ACK] * 98
    store.close()
