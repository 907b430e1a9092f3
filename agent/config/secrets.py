"""Secrets in the config: ``*_file`` resolution and the warnings about exposed secrets
(config.md: files holding secrets that other users can read produce a warning)."""

from __future__ import annotations

import stat
import typing
from pathlib import Path

from agent.config.validation import Mark, Problem

SECRETS = (("source", "token"), ("health", "token"), ("mqtt", "password"))


def inline_secret_warnings(values: dict[str, typing.Any], marks: dict[str, Mark]
                           ) -> list[Problem]:
    """A secret written in the config file itself is as readable as that file (and
    travels in backups and support tickets): a warning naming it."""
    warnings = []
    for section, name in SECRETS:
        key = f"{section}.{name}"
        if key in marks and (values[section] or {}).get(name) is not None:
            warnings.append(Problem(marks[key], key, f"a secret written inline; put it in "
                                    f"{name}_file (mode 600) instead"))
    return warnings


def _readable_by_others(path: Path, mode: int, mark: Mark, key: str) -> list[Problem]:
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return []
    return [Problem(mark, key, f"{path} is readable by other users "
                               f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")]


def resolve_secret(values: dict[str, typing.Any], marks: dict[str, Mark], section: str,
                    name: str, problems: list[Problem], warnings: list[Problem]) -> None:
    """Reads `<name>_file` into `<name>`; the dataclasses only have `<name>`."""
    part = values[section]
    secret_file: Path | None = part.pop(f"{name}_file", None) if part else None
    if secret_file is None:
        return
    file_key = f"{section}.{name}_file"
    mark = marks[file_key]
    if part[name] is not None:
        problems.append(Problem(mark, file_key, f"both {name} and {name}_file are given; "
                                                f"keep one"))
        return
    try:
        part[name] = secret_file.read_text(encoding="utf-8").rstrip("\r\n")
        mode = secret_file.stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        problems.append(Problem(mark, file_key, f"cannot read {secret_file}: {reason}"))
        return
    if not part[name]:
        problems.append(Problem(mark, file_key, f"{secret_file} is empty"))
    warnings += _readable_by_others(secret_file, mode, mark, file_key)


def check_client_pair(values: dict[str, typing.Any], marks: dict[str, Mark], section: str,
                      problems: list[Problem], warnings: list[Problem]) -> None:
    """client_cert and client_key go together; a private key others can read is a risk."""
    part = values[section] or {}
    given = [name for name in ("client_cert", "client_key") if part.get(name) is not None]
    if len(given) == 1:
        key = f"{section}.{given[0]}"
        problems.append(Problem(marks[key], key, "client_cert and client_key go together"))
    key_file = part.get("client_key")
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
        except OSError:
            return  # the schema already said it does not exist
        key = f"{section}.client_key"
        warnings += _readable_by_others(key_file, mode, marks[key], key)
