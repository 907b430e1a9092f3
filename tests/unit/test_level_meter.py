"""LevelMeter, the dead-air meter of a stream: quiet time counts from going on air at the
earliest, so a stream pre-rolled seconds ahead of its start is not called dead at it."""

from __future__ import annotations

from agent.control.playback import LevelMeter
from agent.core.clock import ManualClock
from agent.playout.sources import BufferSource, tone

RATE = 48_000
THRESHOLD_DBFS = -50.0
SILENCE_20MS = bytes(4 * RATE // 50)


def test_quiet_counts_from_going_on_air_not_from_a_read_made_ahead_of_it() -> None:
    clock = ManualClock()
    meter = LevelMeter(BufferSource(SILENCE_20MS + tone(RATE, 1.0)), clock, THRESHOLD_DBFS)
    meter.read(len(SILENCE_20MS))  # pre-roll: the encoder's leading silence
    clock.advance(3.0)
    assert meter.quiet_for() == 3.0  # a probe's quiet time counts from its first read
    meter.went_on_air()
    assert meter.quiet_for() == 0.0
    clock.advance(0.5)
    assert meter.quiet_for() == 0.5 and not meter.heard
    meter.read(4 * RATE // 10)  # the tone
    assert meter.heard and meter.quiet_for() == 0.0


def test_a_meter_never_read_is_not_quiet() -> None:
    clock = ManualClock()
    meter = LevelMeter(BufferSource(SILENCE_20MS), clock, THRESHOLD_DBFS)
    clock.advance(10.0)
    assert meter.quiet_for() == 0.0 and not meter.heard
