"""Fault codes, their severities, and the registry of what is raised right now.

Every fault the agent can raise is listed in FAULT_SEVERITY; docs/faults.md explains each.
A fault of severity ``error`` makes ``/healthz`` answer 503.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Severity = Literal["warning", "error"]

FAULT_SEVERITY: dict[str, Severity] = {
    # source system (source-api.md)
    "source_unreachable": "warning",
    "source_auth": "error",
    "source_unknown_device": "error",
    "source_bad_response": "warning",
    "schedule_rollback": "warning",
    "schedule_signature": "error",
    "schedule_invalid": "error",
    "schedule_invalid_program": "warning",
    "schedule_too_large": "error",
    "media_corrupt": "warning",
    "media_missing": "warning",
    "disk_full": "error",
    "state_disk_full": "warning",
    "state_write_failed": "error",
    "cache_quota": "warning",
    # playout
    "decoder_hung": "warning",
    "decoder_crashed": "warning",
    "audio_output": "error",
    "playout_failed": "error",
    "audio_dropouts": "warning",
    "amplifier": "error",
    "stream_unavailable": "warning",
    "play_failed": "warning",
    "dead_air": "error",
    # FM relay
    "sdr_missing": "error",
    "sdr_stalled": "warning",
    "fm_signal_lost": "warning",
    # line input
    "line_in_failed": "error",
    # configuration, messaging, time
    "config_invalid": "error",
    "mqtt_unreachable": "warning",
    "mqtt_tls": "error",
    "clock_unsynced": "warning",
    "tts_failed": "warning",
    # power
    "mains_lost": "warning",
    # off-air recording
    "recording_failed": "warning",
    "internal_error": "warning",
    # updates (docs/updates.md)
    "update_failed": "warning",
}


class FaultError(Exception):
    """An error that names the fault code it stands for."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Fault:
    code: str
    message: str
    since: float  # unix time it was raised

    @property
    def severity(self) -> Severity:
        return FAULT_SEVERITY[self.code]


FaultListener = Callable[[str, Fault, float | None], None]
"""Called as listener("raised"|"cleared", fault, cleared_at)."""


class FaultRegistry:
    """The set of faults raised now. Raising an already-raised code only updates its message."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._listeners: list[FaultListener] = []

    def subscribe(self, listener: FaultListener) -> None:
        self._listeners.append(listener)

    def raise_(self, code: str, message: str) -> None:
        if code not in FAULT_SEVERITY:
            raise ValueError(f"unknown fault code {code!r}")
        with self._lock:
            old = self._faults.get(code)
            if old is not None:
                self._faults[code] = Fault(code, message, old.since)
                return
            fault = Fault(code, message, self._now())
            self._faults[code] = fault
        for listener in self._listeners:
            listener("raised", fault, None)

    def clear(self, code: str) -> None:
        with self._lock:
            fault = self._faults.pop(code, None)
        if fault is None:
            return
        cleared_at = self._now()
        for listener in self._listeners:
            listener("cleared", fault, cleared_at)

    def internal_error(self, where: str, exc: BaseException) -> None:
        """A background thread caught something unexpected: one log line (the traceback
        only at DEBUG), fault ``internal_error`` with the reason; the thread retries."""
        reason = f"{where}: {type(exc).__name__}: {exc}"
        log.error("%s; retrying", reason)
        log.debug("%s", where, exc_info=exc)
        self.raise_("internal_error", reason[:500])

    def active(self) -> list[Fault]:
        with self._lock:
            return sorted(self._faults.values(), key=lambda f: f.since)

    def is_raised(self, code: str) -> bool:
        with self._lock:
            return code in self._faults
