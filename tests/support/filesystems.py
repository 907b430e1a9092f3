"""Files for tests: small real file systems for disk-full tests (a tmpfs mounted for the
test, root only, which the CI has; grown or filled on demand), and the JSON files a test
bench writes for the agent's sim backends and sidecars."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``, e.g. ``"16m"``) at ``mount_point``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                   check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def resize_tmpfs(mount_point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def fill(path: Path) -> int:
    """Append to ``path`` until its file system is full; the bytes it then holds."""
    with open(path, "ab", buffering=0) as f:
        for block in (1 << 20, 1 << 12):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return path.stat().st_size


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` at once, so a reader never sees it half-written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temporary, path)
