"""Writes that survive power cuts: fsync the data, rename into place, fsync the folder."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_durably(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` (UTF-8): a power cut leaves the old or the new."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    temp.write_text(text, encoding="utf-8")
    publish(temp, target)


def publish(temp: Path, target: Path) -> None:
    """Move the finished file ``temp`` to ``target`` atomically and durably."""
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)
