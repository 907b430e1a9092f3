"""CommandWorker: commands carried out one at a time in order; a stop wakes a thread
waiting for the next command at once instead of after its poll."""

from __future__ import annotations

import threading
import time

from agent.core.worker import CommandWorker

LONG_POLL_S = 60.0


class Recorder(CommandWorker[str]):
    thread_name = "test-commands"

    def __init__(self) -> None:
        super().__init__()
        self.done: list[str] = []
        self.all_done = threading.Event()

    def _run(self) -> None:
        while not self._stopping.is_set():
            command = self._next_command(LONG_POLL_S)
            if command is None:
                continue
            self.done.append(command)
            if command == "last":
                self.all_done.set()


def test_commands_are_carried_out_in_the_order_submitted() -> None:
    worker = Recorder()
    worker.start()
    try:
        for command in ("first", "second", "last"):
            worker.submit(command)
        assert worker.all_done.wait(10)
        assert worker.done == ["first", "second", "last"]
    finally:
        worker.stop(timeout=10)


def test_stop_wakes_the_wait_for_the_next_command() -> None:
    worker = Recorder()
    worker.start()
    began = time.monotonic()
    worker.stop(timeout=LONG_POLL_S)
    assert time.monotonic() - began < LONG_POLL_S / 2  # not the whole poll
    assert "test-commands" not in {thread.name for thread in threading.enumerate()}


def test_nothing_waiting_gives_none_after_the_timeout() -> None:
    worker = Recorder()
    assert worker._next_command(0.01) is None
    worker.submit("queued")
    assert worker._next_command(0.01) == "queued"
