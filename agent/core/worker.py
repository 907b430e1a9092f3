"""A named daemon thread its owner starts and stops: the one shape of the agent's
background loops (``_run`` checks ``_stopping`` and waits on it between rounds)."""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from drivers.thread import NamedThread

log = logging.getLogger(__name__)

CommandT = TypeVar("CommandT")


class Worker(ABC):
    thread_name: str

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = NamedThread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._end_waits()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s thread did not stop within %.1f s", self.thread_name, timeout)

    def _end_waits(self) -> None:  # noqa: B027 - most workers wait on _stopping alone
        """Cut short what ``_run`` waits on besides ``_stopping`` (a queue, a condition),
        so that ``stop`` does not wait it out."""

    @abstractmethod
    def _run(self) -> None: ...


class CommandWorker(Worker, Generic[CommandT]):
    """A Worker that carries out the commands handed to it, one at a time, in order."""

    def __init__(self) -> None:
        super().__init__()
        self._commands: queue.Queue[CommandT | None] = queue.Queue()  # None: stopping

    def submit(self, command: CommandT) -> None:
        self._commands.put(command)

    def _end_waits(self) -> None:
        self._commands.put(None)

    def _next_command(self, timeout: float) -> CommandT | None:
        """The next command, or None when none came within ``timeout`` or stop was asked."""
        try:
            return self._commands.get(timeout=timeout)
        except queue.Empty:
            return None
