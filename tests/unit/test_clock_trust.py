"""ClockTrust: the clock is trusted once, since this boot, by an allowed witness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from agent.core.clock import ManualClock
from agent.core.clock_trust import KEY_TRUSTED_BOOT, ClockFacts, ClockTrust, SystemProbe, decide
from agent.core.faults import FaultRegistry
from agent.state.store import StateStore


class Probe:
    """The facts, set by the test."""

    def __init__(self, ntp: bool = False, rtc: bool = False,
                 boot: str | None = "boot-1") -> None:
        self.ntp, self.rtc, self.boot = ntp, rtc, boot

    def ntp_synced(self) -> bool:
        return self.ntp

    def rtc_set_clock(self) -> bool:
        return self.rtc

    def boot_id(self) -> str | None:
        return self.boot


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "agent.db")
    yield s
    s.close()


def make(store: StateStore, probe: Probe, clock: ManualClock | None = None,
         allowed: tuple[str, ...] = ("ntp", "rtc", "source")
         ) -> tuple[ClockTrust, FaultRegistry, ManualClock]:
    clock = clock or ManualClock()
    faults = FaultRegistry(clock.now)
    return ClockTrust(probe, store, faults, clock.now, allowed), faults, clock


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


@pytest.mark.parametrize(("facts", "allowed", "witness"), [
    (ClockFacts(False, False, False, False), ("ntp", "rtc", "source"), None),
    (ClockFacts(True, False, False, False), ("ntp", "rtc", "source"), "ntp"),
    (ClockFacts(True, False, False, False), ("rtc", "source"), None),
    (ClockFacts(False, True, False, False), ("ntp", "rtc", "source"), "rtc"),
    (ClockFacts(False, False, True, False), ("ntp", "rtc", "source"), "source"),
    (ClockFacts(False, False, False, True), ("ntp",), "earlier in this boot"),
    (ClockFacts(False, False, False, False), ("always",), "always"),
])
def test_decide(facts: ClockFacts, allowed: tuple[str, ...], witness: str | None) -> None:
    assert decide(facts, allowed) == witness


def test_untrusted_raises_clock_unsynced_until_ntp_syncs(store: StateStore) -> None:
    probe = Probe()
    trust, faults, _ = make(store, probe)
    told: list[bool] = []
    trust.subscribe(told.append)
    assert not trust.check() and not trust.trusted
    assert faults.is_raised("clock_unsynced")
    probe.ntp = True
    assert trust.check() and trust.trusted
    assert not faults.is_raised("clock_unsynced")
    assert told == [True]
    assert trust.wait(0)


def test_trust_lasts_for_the_boot_across_agent_restarts_but_not_a_reboot(store: StateStore) -> None:
    probe = Probe(ntp=True)
    make(store, probe)[0].check()
    assert store.get(KEY_TRUSTED_BOOT) == "boot-1"
    probe.ntp = False
    restarted, faults, _ = make(store, probe)
    assert restarted.check() and not faults.is_raised("clock_unsynced")
    rebooted, faults, _ = make(store, Probe(boot="boot-2"))
    assert not rebooted.check() and faults.is_raised("clock_unsynced")


def test_trust_is_never_withdrawn_within_the_boot(store: StateStore) -> None:
    probe = Probe(rtc=True)
    trust, _, _ = make(store, probe)
    assert trust.check()
    probe.rtc = False
    assert trust.check() and trust.trusted


@pytest.mark.parametrize(("offset_s", "trusted"), [(0, True), (1.9, True), (-1.9, True),
                                                   (3.5, False), (-6 * 3600, False)])
def test_a_source_date_within_2_s_vouches(store: StateStore, offset_s: float,
                                          trusted: bool) -> None:
    trust, faults, clock = make(store, Probe())
    trust.check()
    trust.source_date(http_date(clock.now() + offset_s))
    assert trust.trusted is trusted
    assert faults.is_raised("clock_unsynced") is not trusted


@pytest.mark.parametrize("header", [None, "", "yesterday", "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_unreadable_date_headers_are_ignored(store: StateStore, header: str | None) -> None:
    trust, _, _ = make(store, Probe())
    trust.source_date(header)
    assert not trust.trusted


def test_only_allowed_witnesses_count(store: StateStore) -> None:
    trust, _, clock = make(store, Probe(ntp=True, rtc=True), allowed=("source",))
    assert not trust.check()
    trust.source_date(http_date(clock.now()))
    assert trust.trusted
    always, _, _ = make(store, Probe(boot="other"), allowed=("always",))
    assert always.check()


def test_the_system_probe_reads_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "sys/class/rtc/rtc0").mkdir(parents=True)
    (tmp_path / "sys/class/rtc/rtc0/hctosys").write_text("1\n")
    (tmp_path / "proc/sys/kernel/random").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("abc\n")
    probe = SystemProbe(tmp_path)
    assert probe.rtc_set_clock() and probe.boot_id() == "abc"
    assert isinstance(probe.ntp_synced(), bool)
    bare = SystemProbe(tmp_path / "none")
    assert not bare.rtc_set_clock() and bare.boot_id() is None
