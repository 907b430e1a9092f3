"""Live reconfiguration: noticing that the config files changed, and which of the changes
a reload applies while running (the others wait for a restart)."""

from __future__ import annotations

from pathlib import Path

from agent.config.model import Config

# Sections and keys that a reload applies while running; any other change waits for a
# restart (it changes a device, a path or an identity that running parts hold open).
LIVE_KEYS = ("late_start_grace_s", "log_level", "source.poll_interval_s",
             "source.max_backoff_s", "audio.default_volume", "audio.emergency_volume",
             "audio.dead_air_s", "audio.dead_air_dbfs", "audio.decoder_hang_s",
             "audio.stream_caching_ms", "amplifier.warmup_s", "amplifier.idle_off_s", "mqtt")

FileStamps = tuple[tuple[str, float], ...]


def file_stamps(main: Path | None, files: tuple[Path, ...]) -> FileStamps:
    """Modification times of the config files and of conf.d beside the main file (new or
    removed files); nothing without a main file."""
    if main is None:
        return ()
    paths = [*files, main.parent / "conf.d"]
    stamps = []
    for path in paths:
        try:
            stamps.append((str(path), path.stat().st_mtime))
        except OSError:
            stamps.append((str(path), -1.0))
    return tuple(stamps)


def config_changes(old: Config, new: Config) -> list[str]:
    """Dotted names of the top-level keys and section keys that differ."""
    changed = []
    for name in old.__dataclass_fields__:
        if name in ("warnings", "files"):
            continue
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if hasattr(a, "__dataclass_fields__") and name != "mqtt":
            changed += [f"{name}.{key}" for key in a.__dataclass_fields__
                        if getattr(a, key) != getattr(b, key)]
        else:
            changed.append(name)
    return changed


def live_and_pending(changed: list[str]) -> tuple[list[str], list[str]]:
    """The changes a reload applies now, and those that wait for the next restart."""
    live = [k for k in changed if k in LIVE_KEYS or k.split(".")[0] in LIVE_KEYS]
    pending = [k for k in changed if k not in live]
    return live, pending
