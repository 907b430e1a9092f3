"""One value of a small JSON file a test bench writes to stand in for hardware (hil.md's
``sim`` backends: the mains line, the clock), re-read whenever the file changes. A missing
file means the default; a file that cannot be read (a test writing it in place, caught
half-written) or whose value has the wrong type keeps the last reading."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WatchedValue(Generic[T]):
    def __init__(self, path: Path, key: str, default: T, parse: Callable[[object], T | None],
                 expected: str) -> None:
        """``parse`` returns the value, or None when ``expected`` (what a reader is told
        the value must be) is not met."""
        self.path = path
        self._key = key
        self._default = default
        self._parse = parse
        self._expected = expected
        self._stamp: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) last read
        self._value = default

    def value(self) -> T:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._value = None, self._default
            return self._value
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._read()
        return self._value

    def _read(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))[self._key]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s unreadable (%s); keeping %s=%r", self.path, error, self._key,
                        self._value)
            return
        value = self._parse(raw)
        if value is None:
            log.warning("%s: %r must be %s, got %r", self.path, self._key, self._expected, raw)
            return
        self._value = value
