"""A small stand-in for systemd's ``Restart=always`` around a real agent process: it
starts the agent again ``restart_s`` after it exits, whatever the exit, until stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from tests.support.agentproc import AgentProcess


class Supervisor:
    def __init__(self, agent: AgentProcess, restart_s: float = 0.5) -> None:
        self.agent = agent
        self.restart_s = restart_s
        self.exits: list[int] = []  # exit status of each run, in order
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self.agent.start(wait=False)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.agent.process
            assert process is not None
            status = process.wait()
            if self._stopping.is_set():
                return
            self.exits.append(status)
            time.sleep(self.restart_s)
            if not self._stopping.is_set():
                self.agent.start(wait=False)

    def power_cut(self) -> int | None:
        """SIGKILL to the running agent's whole process group (decoders included); the pid
        killed, or None if no run was up."""
        process = self.agent.process
        if process is None or process.poll() is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.pid

    def stop(self) -> None:
        self._stopping.set()
        self.agent.stop()
        self._thread.join(10)
