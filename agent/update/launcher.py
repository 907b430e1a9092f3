"""What ``broadcast-agent`` (and ``python -m agent``) runs first: it picks the version to
run from the update state and, for ``run``, counts a trial's starts, all before the heavy
imports of the agent, so that a version that crashes while importing is still counted and
rolled back (docs/updates.md).

A version installed beside runs as ``python -m agent`` with its folder first on
PYTHONPATH, so its decoder workers import it too; ``LAUNCHED_ENV`` tells that process's
own launcher not to choose again. That handshake is the one thing every version must keep.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.state.durable import write_text_durably
from agent.update.state import (
    BASE_FILE,
    UpdateState,
    after_base_change,
    after_start,
    load_state,
    save_state,
    update_root,
)

LAUNCHED_ENV = "BROADCAST_AGENT_LAUNCHED"
DEFAULT_CONFIG = "/etc/broadcast-agent/agent.yaml"  # agent.cli.main's, without its imports
CONFIG_ENV = "BROADCAST_AGENT_CONFIG"
DEFAULT_STATE_DIR = "/var/lib/broadcast-agent"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if LAUNCHED_ENV not in os.environ:
        chosen = choose_version(argv)
        if chosen is not None:
            env = dict(os.environ)
            env[LAUNCHED_ENV] = str(chosen)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(chosen), env.get("PYTHONPATH")) if p)
            # Not the working directory first on sys.path (python -P): it may hold another
            # agent's source. Inherited by the decoder workers.
            env["PYTHONSAFEPATH"] = "1"
            os.execve(sys.executable, [sys.executable, "-m", "agent", *argv], env)
    from agent.cli.main import main as cli_main
    return cli_main(argv)


def choose_version(argv: list[str], base: str | None = None) -> Path | None:
    """The folder of the version to run, or None for the base install (whose version is
    ``base``, by default the installed distribution's)."""
    try:
        root = update_root(_state_dir(_config_path(argv)))
    except Exception:  # whatever the config holds, an agent starts (and reports it)
        return None
    state = load_state(root)
    if "run" in argv:
        state = _since_base_changed(root, state, base or _installed_version())
        counted = after_start(state)
        if counted != state:
            try:
                save_state(root, counted)
            except OSError as exc:
                print(f"<3>update: cannot record the start ({exc})", file=sys.stderr)
            if counted.state == "rolled_back":
                print(f"<3>update: rolling back to {counted.current or 'the base install'}: "
                      f"{counted.reason}", file=sys.stderr)
            state = counted
    if state.current is None:
        return None
    folder = root / "versions" / state.current
    return folder if folder.is_dir() else None


def _since_base_changed(root: Path, state: UpdateState, base: str) -> UpdateState:
    """A .deb installed since the last run replaced the base install: it runs, not a
    version installed beside for the base before it (docs/updates.md)."""
    recorded_path = root / BASE_FILE
    try:
        recorded: str | None = recorded_path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        recorded = None
    if recorded == base:
        return state
    changed = state if recorded is None else after_base_change(state, base)
    try:
        if changed != state:
            save_state(root, changed)
            print(f"<4>update: the base install is now {base} (was {recorded}): it runs, "
                  "not the versions installed beside it", file=sys.stderr)
        write_text_durably(recorded_path, base + "\n")
    except OSError as exc:
        print(f"<3>update: cannot record the base install's version ({exc})", file=sys.stderr)
    return changed


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("broadcast-agent")
    except PackageNotFoundError:
        return "unknown"


def _config_path(argv: list[str]) -> Path:
    path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    return Path(path)


def _state_dir(config: Path) -> Path:
    """``state_dir`` of the merged config (conf.d/*.yaml over the main file), read with
    nothing but PyYAML: the full loader would import the version the launcher is choosing."""
    import yaml

    state_dir = DEFAULT_STATE_DIR
    for file in (config, *sorted((config.parent / "conf.d").glob("*.yaml"))):
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("state_dir"), str):
            state_dir = doc["state_dir"]
    path = Path(state_dir)
    return path if path.is_absolute() else config.parent / path
