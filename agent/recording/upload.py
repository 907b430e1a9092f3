"""The ``upload_recording`` command (mqtt.md): PUT a recorded span to the source system.

Commands are carried out one at a time on the "recording-upload" thread, never on the
control thread. A span whose end has not been recorded yet is waited for (the open
segment closes within ``segment_s``). The PUT is retried with backoff like reports until
the source answers 201 (ack ``completed``) or the command's ``expires_at`` passes, or
``RETRY_WINDOW_S`` without one (ack ``failed`` with the last error).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from agent.core.clock import Clock
from agent.core.worker import CommandWorker
from agent.mqtt.commands import Command
from agent.recording.index import StoreView
from agent.source.client import SourceClient, SourceError
from agent.source.sync import backoff_delay
from agent.state.journal import Journal

log = logging.getLogger(__name__)

RETRY_WINDOW_S = 3600.0
_CLOSE_MARGIN_S = 10.0  # beyond segment_s, for the recorder to close and publish
_POLL_S = 0.5


class RecordingUploader(CommandWorker[Command]):
    thread_name = "recording-upload"

    def __init__(self, store: StoreView | None, client: SourceClient, journal: Journal,
                 clock: Clock, count_command: Callable[[str, str], None], *,
                 max_backoff_s: float, segment_s: float,
                 rand: Callable[[], float] = random.random) -> None:
        """``store``: None when recording is off."""
        super().__init__()
        self._store = store
        self._segment_s = segment_s
        self._client = client
        self._journal = journal
        self._clock = clock
        self._count_command = count_command
        self.max_backoff_s = max_backoff_s
        self._rand = rand

    def _run(self) -> None:
        while not self._stopping.is_set():
            command = self._next_command(_POLL_S)
            if command is None:
                continue
            try:
                status, reason = self.upload(command)
            except Exception as exc:  # one bad upload must not end the thread
                log.exception("upload_recording %s failed", command.id)
                status, reason = "failed", f"internal: {exc!r}"[:200]
            self._journal.ack(command.id, status, reason)
            self._count_command(command.type, status)

    def upload(self, command: Command) -> tuple[str, str | None]:
        """(ack status, reason) once the span is stored by the source or given up."""
        store = self._store
        if store is None:
            return "failed", "recording_off: off-air recording is disabled (recording.enabled)"
        first, last = float(command.args["from"]), float(command.args["to"])
        now = self._clock.now()
        deadline = command.expires_at if command.expires_at is not None \
            else now + RETRY_WINDOW_S
        recorded_by = min(deadline, last + self._segment_s + _CLOSE_MARGIN_S)
        while (store.end or 0.0) < last and self._clock.now() < recorded_by:
            if self._stopping.wait(_POLL_S):
                return "failed", "interrupted: the agent stopped"
        recording = store.span(first, last)
        if recording is None:
            return "failed", "not_recorded: nothing of that span was recorded"
        failures = 0
        while True:
            try:
                self._client.put_recording(self._journal.stamp(first),
                                           self._journal.stamp(last), recording.body,
                                           recording.headers())
                return "completed", None
            except SourceError as exc:
                failures += 1
                log.warning("upload_recording %s: attempt %d failed: %s", command.id,
                            failures, exc)
                error = f"{exc.code}: {exc.message}"[:300]
            delay = backoff_delay(failures, self.max_backoff_s, self._rand)
            if self._clock.now() + delay > deadline:
                return "failed", error
            if self._stopping.wait(delay):
                return "failed", "interrupted: the agent stopped"
