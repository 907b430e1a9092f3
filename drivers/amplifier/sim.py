"""`amplifier.backend: sim` (hil.md): every transition is a line of
`<state_dir>/amplifier-sim.jsonl`, `{"at": <unix time>, "on": true|false}`, starting with
the initial state (off) each time the agent starts."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Self

from drivers.amplifier.base import Amplifier, AmplifierError, AmplifierSettings
from drivers.clock import Clock, SystemClock

LOG_NAME = "amplifier-sim.jsonl"


class SimAmplifier(Amplifier):
    def __init__(self, state_dir: Path, clock: Clock | None = None) -> None:
        self.path = state_dir / LOG_NAME
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._on = False
        self._append(False)

    @classmethod
    def from_settings(cls, settings: AmplifierSettings) -> Self:
        return cls(settings.state_dir)

    def _append(self, on: bool) -> None:
        line = json.dumps({"at": self._clock.now(), "on": on}) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line)
                log.flush()
                os.fsync(log.fileno())
        except OSError as error:
            raise AmplifierError(f"simulated amplifier: cannot append to {self.path}: {error}") \
                from error

    def set_power(self, on: bool) -> None:
        with self._lock:
            if on != self._on:
                self._append(on)
                self._on = on

    @property
    def is_on(self) -> bool:
        return self._on

    def close(self) -> None:
        self.set_power(False)  # like the relay falling back to rest
