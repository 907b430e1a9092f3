"""The durable update state (docs/updates.md) and the pure deciders around it.

One small JSON file, ``<state_dir>/update/state.json``, replaced atomically (fsync, rename,
fsync the folder), is the only record of which version runs: the launcher reads it at
every start, so a power cut at any instant leaves either the state before a step or the
state after it, and both name an installed, complete version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agent.state.durable import write_text_durably

log = logging.getLogger(__name__)

STATES = ("idle", "downloading", "staged", "trial", "committed", "rolled_back")
MAX_TRIAL_STARTS = 3  # starts of a version on trial without a commit before it is rolled back
MAX_STARTUP_GRACE_S = 60.0
STATE_FILE = "state.json"
BASE_FILE = "base"  # the base install's version the last time the launcher ran it


def update_root(state_dir: Path) -> Path:
    return state_dir / "update"


@dataclass(frozen=True)
class UpdateState:
    state: str = "idle"
    # The version the launcher runs; None, or a version not installed beside (under
    # versions/), is the base install (the .deb's venv).
    current: str | None = None
    previous: str | None = None  # what ran before the last switch: the rollback target
    target: str | None = None  # the version of the update in progress, or of the last one
    command_id: str | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    starts: int = 0  # starts of ``target`` on trial
    baseline: tuple[str, ...] = ()  # error faults the previous version had at the switch
    reason: str | None = None
    reported: bool = True  # the outcome (commit or rollback) was acked and announced

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown update state {self.state!r}")


def load_state(root: Path) -> UpdateState:
    """The recorded state; the default (the base install, idle) when there is none. A file
    that cannot be read is logged and taken as the default too: the agent must start."""
    path = root / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["baseline"] = tuple(doc.get("baseline", ()))
        return UpdateState(**doc)
    except FileNotFoundError:
        return UpdateState()
    except (OSError, ValueError, TypeError) as exc:
        log.error("update state %s unreadable (%s): running the base install", path, exc)
        return UpdateState()


def save_state(root: Path, state: UpdateState) -> None:
    write_text_durably(root / STATE_FILE, json.dumps(asdict(state), sort_keys=True))


# --- deciders -------------------------------------------------------------------------------

def rolled_back(state: UpdateState, reason: str) -> UpdateState:
    return replace(state, state="rolled_back", current=state.previous, reason=reason,
                   reported=False, starts=0)


def after_base_change(state: UpdateState, base: str) -> UpdateState:
    """The state once a .deb replaced the base install with version ``base``: no version
    installed beside shadows it any longer, and an update in progress ends rolled back,
    so that its command is still acked (``failed``); an outcome not yet acked keeps its
    record until it is."""
    if state.state in ("downloading", "staged", "trial"):
        return replace(rolled_back(state, f"superseded: the base install was replaced by "
                                          f"{base} (a .deb)"), current=None)
    if state.current is None:
        return state
    return UpdateState() if state.reported else replace(state, current=None)


def after_start(state: UpdateState) -> UpdateState:
    """The state once the agent starts again: a version on trial counts its starts, and
    after MAX_TRIAL_STARTS without a commit (a crash loop) it is rolled back."""
    if state.state != "trial":
        return state
    if state.starts >= MAX_TRIAL_STARTS:
        return rolled_back(state, f"crash_loop: {state.target} started {state.starts} times "
                                  "without proving healthy")
    return replace(state, starts=state.starts + 1)


@dataclass(frozen=True)
class Verdict:
    commit: bool
    reason: str | None = None


@dataclass
class TrialJudge:
    """Whether the version on trial is kept: it must be healthy without a break for
    ``commit_after_s``. It may take a startup grace (``min(commit_after_s, 60 s)``) to
    become healthy; when it cannot have made it by then it is rolled back."""

    commit_after_s: float
    started: float  # monotonic
    healthy_since: float | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def deadline(self) -> float:
        return self.started + self.commit_after_s + min(self.commit_after_s,
                                                        MAX_STARTUP_GRACE_S)

    def observe(self, now: float, problems: Sequence[str]) -> Verdict | None:
        if problems:
            self.healthy_since = None
            self.problems = tuple(problems)
        elif self.healthy_since is None:
            self.healthy_since = now
        if self.healthy_since is not None and now - self.healthy_since >= self.commit_after_s:
            return Verdict(True)
        if now >= self.deadline:
            what = "; ".join(self.problems) or "unknown"
            return Verdict(False, f"unhealthy: not healthy for {self.commit_after_s:g} s "
                                  f"on trial ({what})")
        return None
