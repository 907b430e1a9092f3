"""Schedule parsing (source-api.md, Schedule): priorities, repeat_gap_s and FM bands.
An invalid program is skipped with its problem (fault ``schedule_invalid_program``); the
rest of the schedule is applied."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.control.activations import program_activation
from agent.core.schedule import PRIORITY_RANK, FmSource, LineInSource
from agent.core.schedule_parser import parse_schedule

SHA = "ab" * 32


def document(*programs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"version": 3, "device_id": "d-1", "timezone": "Asia/Ho_Chi_Minh",
            "media": [{"id": "m-1", "url": "/m/1", "sha256": SHA, "size": 10,
                       "duration_s": 20.0}],
            "programs": list(programs), **fields}


def media_program(pid: str = "p-1", **fields: Any) -> dict[str, Any]:
    return {"id": pid, "source": {"type": "media", "items": ["m-1"]}, "start": "06:00:00",
            **fields}


def fm_program(frequency: object, pid: str = "p-fm") -> dict[str, Any]:
    return {"id": pid, "source": {"type": "fm", "frequency_mhz": frequency},
            "start": "11:00:00", "duration_s": 600}


def test_priority_ranks_emergency_live_priority_scheduled() -> None:
    assert sorted(PRIORITY_RANK, key=PRIORITY_RANK.__getitem__) == [
        "scheduled", "priority", "live", "emergency"]


@pytest.mark.parametrize("priority", ["scheduled", "priority", "live", "emergency"])
def test_every_priority_class_is_accepted(priority: str) -> None:
    parsed = parse_schedule(document(media_program(priority=priority)), "UTC")
    assert parsed.problems == []
    assert parsed.schedule.programs[0].priority == priority


def test_priority_defaults_to_scheduled_and_an_unknown_one_skips_the_program() -> None:
    parsed = parse_schedule(document(media_program("p-1"),
                                     media_program("p-2", priority="urgent")), "UTC")
    assert [p.id for p in parsed.schedule.programs] == ["p-1"]
    assert parsed.schedule.programs[0].priority == "scheduled"
    assert parsed.problems == [("p-2", "p-2: unknown priority 'urgent'")]


def test_repeat_gap_defaults_to_zero_and_is_parsed() -> None:
    parsed = parse_schedule(document(media_program("p-1"),
                                     media_program("p-2", repeat=3, repeat_gap_s=30)), "UTC")
    assert parsed.problems == []
    plain, repeated = parsed.schedule.programs
    assert plain.repeat_gap_s == 0.0
    assert repeated.repeat_gap_s == 30.0
    assert isinstance(repeated.repeat_gap_s, float)


def test_an_open_window_lasts_the_items_and_the_gaps_between_repetitions() -> None:
    schedule = parse_schedule(document(media_program(repeat=3, repeat_gap_s=30.5)),
                              "UTC").schedule
    assert schedule.nominal_length(schedule.programs[0]) == 3 * 20.0 + 2 * 30.5


@pytest.mark.parametrize("gap", [-1, "30", True, math.nan, math.inf, 3600.5, None])
def test_an_invalid_repeat_gap_skips_the_program(gap: object) -> None:
    parsed = parse_schedule(document(media_program(repeat=2, repeat_gap_s=gap),
                                     media_program("p-ok")), "UTC")
    assert [p.id for p in parsed.schedule.programs] == ["p-ok"]
    assert parsed.problems == [("p-1", "p-1: 'repeat_gap_s' must be a number 0..3600")]


@pytest.mark.parametrize("frequency", [54, 54.0, 60.5, 68, 76, 87.5, 100.0, 108])
def test_commune_and_broadcast_fm_bands_are_accepted(frequency: float) -> None:
    parsed = parse_schedule(document(fm_program(frequency),
                                     fm_fallback={"frequency_mhz": frequency}), "UTC")
    assert parsed.problems == []
    assert parsed.schedule.programs[0].source == FmSource(float(frequency))
    assert parsed.schedule.fm_fallback_mhz == float(frequency)


@pytest.mark.parametrize("frequency", [53.9, 68.1, 70, 75.9, 108.1, 100_000, "100", True,
                                       None, math.nan])
def test_frequencies_outside_both_bands_are_refused(frequency: object) -> None:
    parsed = parse_schedule(document(fm_program(frequency),
                                     fm_fallback={"frequency_mhz": frequency}), "UTC")
    assert parsed.schedule.programs == ()
    within = "'frequency_mhz' must be within 54–68 MHz or 76–108 MHz"
    if frequency is None:  # no fallback station is no problem; a program needs one
        assert parsed.problems == [("p-fm", f"p-fm: {within}, got None")]
    else:
        assert parsed.problems == [("p-fm", f"p-fm: {within}, got {frequency!r}"),
                                   ("fm_fallback", f"fm_fallback: {within}, got {frequency!r}")]
    assert parsed.schedule.fm_fallback_mhz is None


def test_a_line_in_program_relays_the_input_for_its_window_and_needs_duration_s() -> None:
    line_in = {"id": "p-mic", "source": {"type": "line_in"}, "start": "07:00:00"}
    parsed = parse_schedule(document({**line_in, "duration_s": 900}, {**line_in, "id": "p-2"}),
                            "UTC")
    [program] = parsed.schedule.programs
    assert (program.id, program.source, program.duration_s) == ("p-mic", LineInSource(), 900.0)
    assert parsed.problems == [("p-2", "p-2: a line_in program needs 'duration_s'")]
    activation = program_activation(program, 0.0, 900.0, "p-mic@0", lambda _: None)
    assert [(i.kind, i.duration_s) for i in activation.items] == [("line_in", None)]
    assert activation.live and activation.end == 900.0
