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


def publish(temp: Path, target: Path) -> None:
    """Move the finished file ``temp`` to ``target`` atomically and durably."""
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)
