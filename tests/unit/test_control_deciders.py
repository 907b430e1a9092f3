"""The control loop's pure deciders: amplifier power, the command lifecycle, and the
activations built from commands."""

from __future__ import annotations

from typing import Any

import pytest

from agent.control.activations import command_activation
from agent.control.amplifier import WARMUP_MARGIN_S, AmplifierPolicy
from agent.control.ledger import CommandLedger, Settled
from agent.core.arbiter import Item
from agent.mqtt.commands import Command

NOW = 1000.0


def policy() -> AmplifierPolicy:
    return AmplifierPolicy(warmup_s=2.0, idle_off_s=60.0)


@pytest.mark.parametrize(("next_start", "busy", "idle_since", "on_since", "wanted"), [
    (None, True, None, None, True),                          # playing
    (NOW + 2.0 + WARMUP_MARGIN_S, False, NOW - 500, None, True),  # warm-up begins
    (NOW + 10.0, False, NOW - 500, NOW - 500, False),        # long idle, start far off
    (None, False, NOW - 30, NOW - 100, None),                # idle, not long enough
    (None, False, NOW - 100, NOW - 30, None),                # warmed recently: stays on
    (None, False, NOW - 100, NOW - 70, False),
])
def test_amplifier_power(next_start: float | None, busy: bool, idle_since: float | None,
                         on_since: float | None, wanted: bool | None) -> None:
    assert policy().wanted(NOW, next_start, busy, idle_since, on_since) is wanted


def test_forced_power_holds_until_the_next_warm_up() -> None:
    decider = policy()
    decider.forced = False
    assert decider.wanted(NOW, None, True, None, None) is False
    assert decider.wanted(NOW, NOW + 2.0, True, None, None) is True
    assert decider.forced is None


def command(type_: str, **args: Any) -> Command:
    return Command("c-1", type_, args, NOW, None)


def test_a_command_fails_only_when_every_item_failed() -> None:
    ledger = CommandLedger()
    twice, once = command("emergency", text="a", repeat=2), command("play_now", media_id="m")
    ledger.open("cmd:a", twice)
    ledger.open("cmd:b", once)
    ledger.item_failed("cmd:a")
    ledger.item_failed("cmd:b")
    assert ledger.settle({"cmd:a", "cmd:b"}) == []
    assert ledger.settle({"cmd:a"}) == [Settled(once, "failed",
                                                "play_failed: nothing could be played")]
    assert ledger.settle(set()) == [Settled(twice, "completed", None)]
    assert "cmd:a" not in ledger


def test_a_dropped_command_is_never_settled() -> None:
    ledger = CommandLedger()
    ledger.open("cmd:a", command("fm_relay", frequency_mhz=60.0, duration_s=10.0))
    ledger.drop("cmd:a")
    assert ledger.settle(set()) == []


@pytest.mark.parametrize(("cached", "item"), [
    (True, Item("media", "m-1", 30.0)),
    (False, Item("media", "https://cdn.example.invalid/m-1.mp3", None)),
])
def test_an_uncached_media_id_plays_from_the_url(cached: bool, item: Item) -> None:
    cmd = command("emergency", media_id="m-1", url="https://cdn.example.invalid/m-1.mp3",
                  repeat=2)
    activation = command_activation(cmd, NOW, 100, lambda media_id: 30.0,
                                    lambda media_id: cached)
    assert activation.items == (item, item)
    assert (activation.priority, activation.volume, activation.absolute_volume,
            activation.chime) == ("emergency", 100, True, True)


@pytest.mark.parametrize(("start_at", "start"), [(NOW + 5.25, NOW + 5.25), (NOW - 3, NOW)])
def test_start_at_times_the_activation(start_at: float, start: float) -> None:
    cmd = command("fm_relay", frequency_mhz=60.0, duration_s=30.0, start_at=start_at)
    activation = command_activation(cmd, NOW, 100, lambda media_id: None,
                                    lambda media_id: False)
    assert (activation.start, activation.end) == (start, start + 30.0)
    assert activation.items == (Item("fm", "60.0", 30.0),)


@pytest.mark.parametrize(("forced", "idle_since", "on_since", "due"), [
    (None, NOW - 30, NOW - 100, NOW + 30),   # idle_off_s after the last sound
    (None, NOW - 100, NOW - 30, NOW + 30),   # or after switching on, whichever is later
    (None, None, NOW - 100, None),           # the card carries sound: not due
    (True, NOW - 100, NOW - 100, None),      # forced on holds
])
def test_the_idle_off_is_due_when_the_policy_would_switch_off(
        forced: bool | None, idle_since: float | None, on_since: float | None,
        due: float | None) -> None:
    decider = policy()
    decider.forced = forced
    assert decider.off_due(idle_since, on_since) == due
    if due is not None:
        assert decider.wanted(due, None, False, idle_since, on_since) is False
        assert decider.wanted(due - 0.01, None, False, idle_since, on_since) is None
