"""The control core under thousands of generated field sequences (issue 9, "Deterministic
simulation"). Four functions of 1,250 sequences each, so that ``pytest -n 2`` spreads them;
derandomized: each function draws the same sequences on every run. How to reproduce or
look into a failure: tests/simulation/README.md."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulation import events as ev
from tests.simulation.simulation import Simulation

EXAMPLES = int(os.environ.get("SIM_EXAMPLES", "1250"))  # per function: 5,000 in all
field_settings = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else None


def run(sequence: list[ev.Event]) -> None:
    with tempfile.TemporaryDirectory(dir=TMPFS) as state_dir:
        sim = Simulation(Path(state_dir))
        try:
            sim.play(sequence)
        finally:
            sim.close()


# Each function salts its draws differently (derandomize seeds from the test's name), so
# the four cover different sequences.
@pytest.mark.xdist_group("simulation-1")
@field_settings
@given(ev.sequences)
def test_field_sequences_1(sequence: list[ev.Event]) -> None:
    run(sequence)


@pytest.mark.xdist_group("simulation-2")
@field_settings
@given(ev.sequences)
def test_field_sequences_2(sequence: list[ev.Event]) -> None:
    run(sequence)


@pytest.mark.xdist_group("simulation-3")
@field_settings
@given(st.lists(st.one_of(ev.publish, ev.send(), st.builds(ev.Wait, st.just(4.0))),
                min_size=1, max_size=25))
def test_schedules_and_commands(sequence: list[ev.Event]) -> None:
    run(sequence)


@pytest.mark.xdist_group("simulation-4")
@field_settings
@given(ev.turbulent)
def test_restarts_and_failing_surroundings(sequence: list[ev.Event]) -> None:
    run(sequence)
