"""`power.backend: sim` (hil.md): reads `<state_dir>/power-sim.json`, `{"mains": true|false}`,
whenever it changes; a missing file means mains present. A file that cannot be parsed
(a test writing it in place, caught half-written) keeps the last reading."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Self

from drivers.power.base import MainsSensor, PowerSettings

log = logging.getLogger(__name__)

FILE_NAME = "power-sim.json"


class SimMainsSensor(MainsSensor):
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._stamp: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) last read
        self._mains = True

    @classmethod
    def from_settings(cls, settings: PowerSettings) -> Self:
        return cls(settings.state_dir)

    @property
    def mains_present(self) -> bool | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._mains = None, True
            return True
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._read()
        return self._mains

    def _read(self) -> None:
        try:
            mains = json.loads(self.path.read_text(encoding="utf-8"))["mains"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s unreadable (%s); keeping mains=%s", self.path, error, self._mains)
            return
        if not isinstance(mains, bool):
            log.warning("%s: 'mains' must be true or false, got %r", self.path, mains)
            return
        self._mains = mains

    def close(self) -> None:
        """Nothing to release."""
