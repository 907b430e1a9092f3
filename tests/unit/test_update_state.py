"""The update's deciders (agent/update/state.py, moment.py) on an injected clock, its
durable state file, and the launcher's choice of version (agent/update/launcher.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.update.launcher import choose_version
from agent.update.moment import QUIET_AHEAD_S, Window, switch_blocker
from agent.update.state import (
    BASE_FILE,
    MAX_TRIAL_STARTS,
    STATE_FILE,
    TrialJudge,
    UpdateState,
    after_base_change,
    after_start,
    load_state,
    save_state,
    update_root,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
TRIAL = UpdateState(state="trial", current="1.1", previous="1.0", target="1.1",
                    command_id="c-1", reported=True)


def test_a_trial_counts_its_starts_then_rolls_back_after_a_crash_loop() -> None:
    state = TRIAL
    for start in range(1, MAX_TRIAL_STARTS + 1):
        state = after_start(state)
        assert (state.state, state.current, state.starts) == ("trial", "1.1", start)
    state = after_start(state)
    assert (state.state, state.current, state.target) == ("rolled_back", "1.0", "1.1")
    assert state.reason == "crash_loop: 1.1 started 3 times without proving healthy"
    assert state.reported is False  # the old version acks and announces it
    assert after_start(state) == state


@pytest.mark.parametrize("state", ["idle", "downloading", "staged", "committed"])
def test_other_states_are_not_changed_by_a_start(state: str) -> None:
    assert after_start(UpdateState(state=state, current="1.0")) == \
        UpdateState(state=state, current="1.0")


def test_the_judge_commits_after_commit_after_s_of_unbroken_health() -> None:
    judge = TrialJudge(commit_after_s=300, started=1000.0)
    assert judge.observe(1000.0, ["no schedule loaded"]) is None
    assert judge.observe(1010.0, []) is None  # healthy from here
    assert judge.observe(1040.0, ["MQTT not connected"]) is None  # a break starts again
    assert judge.observe(1041.0, []) is None
    assert judge.observe(1340.0, []) is None
    verdict = judge.observe(1341.0, [])
    assert verdict is not None and verdict.commit


def test_a_break_too_late_to_prove_health_by_the_deadline_rolls_back() -> None:
    judge = TrialJudge(commit_after_s=300, started=1000.0)
    assert judge.observe(1010.0, []) is None
    assert judge.observe(1200.0, ["MQTT not connected"]) is None
    assert judge.observe(1201.0, []) is None
    verdict = judge.observe(1360.0, [])
    assert verdict is not None and not verdict.commit
    assert verdict.reason == "unhealthy: not healthy for 300 s on trial (MQTT not connected)"


def test_the_judge_rolls_back_a_version_that_never_proves_healthy() -> None:
    judge = TrialJudge(commit_after_s=300, started=1000.0)
    for now in range(1000, 1360, 10):  # 300 s + the 60 s startup grace
        assert judge.observe(float(now), ["fault dead_air"]) is None
    verdict = judge.observe(1360.0, ["fault dead_air"])
    assert verdict is not None and not verdict.commit
    assert verdict.reason == "unhealthy: not healthy for 300 s on trial (fault dead_air)"


def test_the_startup_grace_is_at_most_commit_after_s() -> None:
    assert TrialJudge(commit_after_s=5, started=0.0).deadline == 10.0
    assert TrialJudge(commit_after_s=600, started=0.0).deadline == 660.0


def test_the_state_file_survives_a_round_trip_and_a_broken_one_means_the_base(
        tmp_path: Path) -> None:
    state = UpdateState(state="trial", current="1.1", previous="1.0", target="1.1",
                        baseline=("dead_air",), starts=2)
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary left
    (tmp_path / STATE_FILE).write_text('{"state": "tri')
    assert load_state(tmp_path) == UpdateState()
    (tmp_path / STATE_FILE).write_text('{"state": "flying"}')
    assert load_state(tmp_path) == UpdateState()


# --- the moment of the switch ---------------------------------------------------------------

def at(hh: int, mm: int) -> float:
    return datetime(2026, 11, 23, hh, mm, tzinfo=TZ).timestamp()


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("01:00-04:00", [(1, 0), (3, 59)], [(0, 59), (4, 0), (12, 0)]),
    ("22:30-02:00", [(22, 30), (23, 59), (0, 0), (1, 59)], [(2, 0), (22, 29), (12, 0)]),
    ("00:00-24:00", [(0, 0), (12, 0), (23, 59)], []),
])
def test_windows(text: str, inside: list[tuple[int, int]],
                 outside: list[tuple[int, int]]) -> None:
    window = Window.parse(text)
    for hh, mm in inside:
        assert window.contains(datetime.fromtimestamp(at(hh, mm), TZ)), (text, hh, mm)
    for hh, mm in outside:
        assert not window.contains(datetime.fromtimestamp(at(hh, mm), TZ)), (text, hh, mm)


@pytest.mark.parametrize("text", ["1:00-4:00", "01:00-01:00", "25:00-01:00", "01:00",
                                  "00:00-24:30"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        Window.parse(text)


NIGHT = Window.parse("01:00-04:00")
QUIET: dict[str, Any] = {"playing": None, "next": []}


def test_a_quiet_moment_in_the_window_allows_the_switch() -> None:
    assert switch_blocker(at(2, 0), QUIET, NIGHT, TZ) is None


def test_outside_the_window_it_waits() -> None:
    assert switch_blocker(at(5, 0), QUIET, NIGHT, TZ) == "outside the maintenance window"


@pytest.mark.parametrize("priority", ["emergency", "live", "priority", "scheduled"])
def test_anything_on_air_blocks_the_switch(priority: str) -> None:
    snapshot = {"playing": {"priority": priority, "program_id": "p-1"}, "next": []}
    assert switch_blocker(at(2, 0), snapshot, NIGHT, TZ) == f"{priority} broadcast on air"


def test_a_program_due_soon_blocks_the_switch() -> None:
    now = at(2, 0)
    due = {"playing": None, "next": [{"program_id": "p-2", "start":
           datetime.fromtimestamp(now + QUIET_AHEAD_S - 1, TZ).isoformat()}]}
    later = {"playing": None, "next": [{"program_id": "p-2", "start":
             datetime.fromtimestamp(now + QUIET_AHEAD_S + 1, TZ).isoformat()}]}
    assert switch_blocker(now, due, NIGHT, TZ) == "program p-2 is due"
    assert switch_blocker(now, later, NIGHT, TZ) is None


# --- the launcher ---------------------------------------------------------------------------

def config_with_state(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "etc" / "agent.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"device_id": "d1", "state_dir": str(tmp_path / "a")}))
    (tmp_path / "etc" / "conf.d").mkdir()
    (tmp_path / "etc" / "conf.d" / "10-state.yaml").write_text(
        yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    return config, update_root(tmp_path / "state")


def test_the_launcher_runs_the_current_version_and_counts_only_runs(tmp_path: Path) -> None:
    config, root = config_with_state(tmp_path)
    (root / "versions" / "1.1").mkdir(parents=True)
    save_state(root, TRIAL)
    assert choose_version(["status", "--config", str(config)]) == root / "versions" / "1.1"
    assert load_state(root).starts == 0
    assert choose_version(["run", "--config", str(config)]) == root / "versions" / "1.1"
    assert load_state(root).starts == 1


def test_the_launcher_rolls_back_a_crash_loop_to_the_base_install(tmp_path: Path) -> None:
    config, root = config_with_state(tmp_path)
    (root / "versions" / "1.1").mkdir(parents=True)
    save_state(root, UpdateState(state="trial", current="1.1", previous="0.9", target="1.1",
                                 starts=MAX_TRIAL_STARTS))
    assert choose_version(["run", f"--config={config}"]) is None  # 0.9 is the base install
    assert load_state(root).state == "rolled_back"


def test_the_launcher_falls_back_to_the_base_without_state_config_or_folder(
        tmp_path: Path) -> None:
    config, root = config_with_state(tmp_path)
    assert choose_version(["run", "--config", str(config)]) is None
    save_state(root, UpdateState(current="1.1"))  # its folder is gone
    assert choose_version(["run", "--config", str(config)]) is None
    assert choose_version(["run", "--config", str(tmp_path / "absent.yaml")]) is None


def test_a_deb_installed_since_the_last_run_runs_not_the_version_beside(
        tmp_path: Path) -> None:
    config, root = config_with_state(tmp_path)
    (root / "versions" / "1.1").mkdir(parents=True)
    committed = UpdateState(state="committed", current="1.1", previous="1.0", target="1.1")
    save_state(root, committed)
    run = ["run", "--config", str(config)]
    assert choose_version(run, base="1.0") == root / "versions" / "1.1"  # records 1.0
    assert (root / BASE_FILE).read_text() == "1.0\n"
    assert choose_version(run, base="1.0") == root / "versions" / "1.1"
    assert choose_version(run, base="1.2") is None  # a technician installed the 1.2 .deb
    assert load_state(root) == UpdateState()
    assert (root / BASE_FILE).read_text() == "1.2\n"
    assert (root / "versions" / "1.1").is_dir()  # left for the service to clean


def test_an_update_in_progress_when_the_base_changes_ends_rolled_back_and_is_acked(
        tmp_path: Path) -> None:
    config, root = config_with_state(tmp_path)
    (root / "versions" / "1.1").mkdir(parents=True)
    save_state(root, TRIAL)
    (root / BASE_FILE).write_text("1.0\n")
    assert choose_version(["run", "--config", str(config)], base="1.2") is None
    state = load_state(root)
    assert (state.state, state.current, state.reported) == ("rolled_back", None, False)
    assert state.reason is not None and state.reason.startswith("superseded")


def test_the_first_run_that_records_the_base_changes_nothing(tmp_path: Path) -> None:
    # Without a record (the first start of a launcher that keeps one) nothing says the
    # base changed: the version beside goes on running.
    config, root = config_with_state(tmp_path)
    (root / "versions" / "1.1").mkdir(parents=True)
    save_state(root, TRIAL)
    assert choose_version(["run", "--config", str(config)], base="1.2") == \
        root / "versions" / "1.1"
    assert load_state(root).starts == 1


def test_an_outcome_not_yet_acked_keeps_its_record_when_the_base_changes() -> None:
    unacked = UpdateState(state="committed", current="1.1", previous="1.0", target="1.1",
                          command_id="c-1", reported=False)
    assert after_base_change(unacked, "1.2") == replace(unacked, current=None)
    assert after_base_change(replace(unacked, reported=True), "1.2") == UpdateState()
    assert after_base_change(UpdateState(), "1.2") == UpdateState()
