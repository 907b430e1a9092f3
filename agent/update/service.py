"""The ``update`` command carried out (mqtt.md; docs/updates.md) on the "update" thread:
download and install beside, switch at a quiet moment, judge the trial, report the outcome.

Every step first records where it is (state.py), then acts; at its start the thread picks
up from the recorded state, so a restart or power cut anywhere resumes or reports the
update instead of forgetting it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.core.worker import CommandWorker
from agent.mqtt.commands import Command
from agent.state.journal import Journal
from agent.update.bundle import Bundle, BundleError, download
from agent.update.moment import Window, switch_blocker
from agent.update.state import (
    TrialJudge,
    UpdateState,
    load_state,
    rolled_back,
    save_state,
)
from agent.update.store import VersionStore

log = logging.getLogger(__name__)

POLL_S = 1.0
DISK_MARGIN_BYTES = 50 * 1024 * 1024
UNPACKED_FACTOR = 3  # room for the bundle and its unpacked files


class UpdateService(CommandWorker[Command]):
    thread_name = "update"

    def __init__(self, root: Path, running: str, *, commit_after_s: float, window: str,
                 max_bytes: int, journal: Journal, faults: FaultRegistry, clock: Clock,
                 tz: ZoneInfo, snapshot: Callable[[], dict[str, Any]],
                 problems: Callable[[], list[str]], restart: Callable[[], None],
                 on_change: Callable[[], None],
                 count_command: Callable[[str, str], None]) -> None:
        super().__init__()
        self._store = VersionStore(root)
        self._root = root
        self.running = running
        self.commit_after_s = commit_after_s
        self.window = Window.parse(window)
        self.max_bytes = max_bytes
        self._journal = journal
        self._faults = faults
        self._clock = clock
        self._tz = tz
        self._snapshot = snapshot
        self._problems = problems
        self._restart = restart
        self._on_change = on_change
        self._count_command = count_command
        self._lock = threading.Lock()
        self._state = load_state(root)
        self._judge: TrialJudge | None = None
        self._blocker: str | None = None

    def status(self) -> dict[str, Any]:
        """Status ``update`` (mqtt.md)."""
        with self._lock:
            st = self._state
        before_switch = st.state in ("downloading", "staged")
        return {"state": st.state,
                "version": self.running if st.state == "idle" else st.target,
                "previous": self.running if before_switch else st.previous}

    # --- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        self._resume()
        while not self._stopping.is_set():
            try:
                if self._step():
                    return  # switched or rolled back: this process is ending
            except Exception:  # the thread must survive a bug in one step
                log.exception("update step failed")
                self._stopping.wait(POLL_S)
            self._take_command()

    def _resume(self) -> None:
        self._store.clean()
        st = self._state
        if st.state == "trial" and st.target != self.running:
            # The launcher could not run the version on trial (its folder is gone).
            self._save(rolled_back(st, f"not_installed: {st.target} did not start"))
        elif st.state == "trial":
            self._judge = TrialJudge(self.commit_after_s, self._clock.monotonic())
            log.info("version %s on trial (start %d): committed after %g s of health",
                     self.running, st.starts, self.commit_after_s)
        st = self._state
        if st.state == "rolled_back":
            self._faults.raise_("update_failed", f"{st.target} rolled back: {st.reason}")
        if not st.reported:
            self._report(st)

    def _step(self) -> bool:
        st = self._state
        if st.state == "downloading":
            self._fetch(st)
        elif st.state == "staged":
            return self._try_switch(st)
        elif st.state == "trial" and self._judge is not None:
            return self._judge_trial(st)
        return False

    def _take_command(self) -> None:
        command = self._next_command(POLL_S)
        if command is None:
            return
        st = self._state
        version = str(command.args["version"])
        refusal = None
        if st.state in ("downloading", "staged", "trial"):
            refusal = f"busy: the update to {st.target} is still {st.state}"
        elif version == self.running:
            refusal = f"already_running: {version} is the running version"
        elif command.args["size"] > self.max_bytes:
            refusal = (f"too_large: {command.args['size']} bytes is over update.max_bytes "
                       f"{self.max_bytes}")
        if refusal is not None:
            self._fail_now(command.id, refusal)
            return
        self._faults.clear("update_failed")
        self._save(UpdateState(
            state="downloading", current=st.current, previous=st.previous, target=version,
            command_id=command.id, url=str(command.args["url"]),
            sha256=str(command.args["sha256"]), size=int(command.args["size"])))
        self._journal.event("update_started", version=version, previous=self.running,
                            command_id=command.id)

    # --- steps -------------------------------------------------------------------------
    def _fetch(self, st: UpdateState) -> None:
        assert st.target is not None and st.url is not None and st.sha256 is not None
        assert st.size is not None
        self._store.clean()
        free = shutil.disk_usage(self._root).free
        if free < st.size * UNPACKED_FACTOR + DISK_MARGIN_BYTES:
            self._fail(st, f"disk_full: {free} bytes free for a bundle of {st.size}")
            return
        path = self._store.downloads / f"{st.target}.bundle"
        try:
            download(st.url, path, st.size, st.sha256, self._stopping)
            bundle = Bundle.open(path, st.target)
            missing = bundle.missing_dependencies()
            if missing:
                raise BundleError("dependencies_changed", "needs a new .deb: "
                                  + ", ".join(missing[:5]))
            self._store.install(bundle)
        except InterruptedError:
            return  # resumed at the next start
        except BundleError as exc:
            self._fail(st, str(exc))
            return
        except OSError as exc:
            self._fail(st, f"install: {exc}")
            return
        finally:
            path.unlink(missing_ok=True)
        log.info("update %s installed beside %s", st.target, self.running)
        self._save(replace(st, state="staged"))

    def _try_switch(self, st: UpdateState) -> bool:
        if not self._store.installed(st.target):
            self._save(replace(st, state="downloading"))  # unpacked copy gone: fetch again
            return False
        blocker = switch_blocker(self._clock.now(), self._snapshot(), self.window, self._tz)
        if blocker is not None:
            if blocker != self._blocker:
                log.info("update to %s waits: %s", st.target, blocker)
            self._blocker = blocker
            return False
        baseline = tuple(sorted(f.code for f in self._faults.active()
                                if f.severity == "error"))
        self._save(replace(st, state="trial", current=st.target, previous=self.running,
                           starts=0, baseline=baseline))
        log.warning("switching to %s on trial; restarting", st.target)
        self._restart()
        return True

    def _judge_trial(self, st: UpdateState) -> bool:
        assert self._judge is not None
        problems = self._problems() + [
            f"fault {f.code}" for f in self._faults.active()
            if f.severity == "error" and f.code not in st.baseline]
        verdict = self._judge.observe(self._clock.monotonic(), problems)
        if verdict is None:
            return False
        if verdict.commit:
            self._save(replace(st, state="committed", reported=False, starts=0))
            self._report(self._state)
            self._store.keep_only(st.current, st.previous)
            return False
        log.error("version %s rolled back: %s", st.target, verdict.reason)
        self._save(rolled_back(st, verdict.reason or "unhealthy"))
        self._restart()
        return True

    # --- outcomes ----------------------------------------------------------------------
    def _report(self, st: UpdateState) -> None:
        """The outcome of a switched update, once: ack, event (and the fault)."""
        body = {"version": st.target, "previous": st.previous}
        if st.state == "committed":
            self._faults.clear("update_failed")
            if st.command_id is not None:
                self._ack(st.command_id, "completed", None)
            self._journal.event("update_committed", **body)
        else:
            if st.command_id is not None:
                self._ack(st.command_id, "failed", st.reason)
            self._journal.event("update_rolled_back", reason=st.reason, **body)
        self._save(replace(st, reported=True))

    def _fail(self, st: UpdateState, reason: str) -> None:
        """An update that failed before switching: nothing changed, the running version
        stays."""
        log.error("update to %s failed: %s", st.target, reason)
        if st.command_id is not None:
            self._fail_now(st.command_id, reason)
        self._save(replace(st, state="idle", reason=reason))

    def _fail_now(self, command_id: str, reason: str) -> None:
        self._faults.raise_("update_failed", reason)
        self._ack(command_id, "failed", reason)

    def _ack(self, command_id: str, status: str, reason: str | None) -> None:
        self._journal.ack(command_id, status, reason)
        self._count_command("update", status)

    def _save(self, st: UpdateState) -> None:
        save_state(self._root, st)
        with self._lock:
            self._state = st
        self._on_change()
