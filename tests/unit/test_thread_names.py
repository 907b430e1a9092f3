"""The agent's threads carry their names into the kernel, where ``top -H`` and
``ps -L`` read them (drivers/thread.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.thread import NamedThread


@pytest.mark.parametrize(("name", "kernel_name"), [
    ("playout", "playout"), ("recording-upload", "recording-uploa")])
def test_a_named_thread_is_known_to_the_kernel_by_its_name(name: str, kernel_name: str) -> None:
    seen: list[str] = []

    def read_own_name() -> None:
        seen.append(Path("/proc/thread-self/comm").read_text().strip())
    thread = NamedThread(target=read_own_name, name=name)
    thread.start()
    thread.join(5)
    assert seen == [kernel_name]
