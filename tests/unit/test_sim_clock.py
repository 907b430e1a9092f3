"""``clock.backend: sim``: the system clock set off by the offset in clock-sim.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.core.clock import SIM_FILE, SimClock, SystemClock, open_clock


def _write(state_dir: Path, document: object) -> None:
    (state_dir / SIM_FILE).write_text(json.dumps(document))


def test_no_file_is_the_system_clock(tmp_path: Path) -> None:
    clock = SimClock(tmp_path, check_every_s=0)
    assert abs(clock.now() - time.time()) < 1.0


def test_the_offset_applies_and_follows_the_file(tmp_path: Path) -> None:
    clock = SimClock(tmp_path, check_every_s=0)
    _write(tmp_path, {"offset_s": -21600})
    assert abs(clock.now() - (time.time() - 21600)) < 1.0
    _write(tmp_path, {"offset_s": 0.5, "note": "stepped by NTP"})
    assert abs(clock.now() - (time.time() + 0.5)) < 1.0
    (tmp_path / SIM_FILE).unlink()
    assert abs(clock.now() - time.time()) < 1.0


def test_a_step_never_moves_the_monotonic_clock(tmp_path: Path) -> None:
    clock = SimClock(tmp_path, check_every_s=0)
    before = clock.monotonic()
    _write(tmp_path, {"offset_s": -3600})
    clock.now()
    assert 0 <= clock.monotonic() - before < 1.0


def test_an_unreadable_file_keeps_the_last_offset(tmp_path: Path) -> None:
    clock = SimClock(tmp_path, check_every_s=0)
    _write(tmp_path, {"offset_s": 3600})
    clock.now()
    for bad in ('{"offset_s": ', '{"offset_s": "soon"}', '{"offset_s": true}', "[]"):
        (tmp_path / SIM_FILE).write_text(bad)
        assert abs(clock.now() - (time.time() + 3600)) < 1.0, bad


def test_open_clock_chooses_by_backend(tmp_path: Path) -> None:
    assert isinstance(open_clock("sim", tmp_path), SimClock)
    assert isinstance(open_clock("system", tmp_path), SystemClock)
