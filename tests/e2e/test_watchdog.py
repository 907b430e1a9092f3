"""systemd readiness and watchdog, seen from a real NOTIFY_SOCKET of the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from tests.conftest import AgentFactory, Source, whole_second
from tests.support.agentproc import local_time, processes, wait_for
from tests.support.scripts import write_script


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self, wait_s: float = 0.1) -> list[tuple[float, str]]:
        """Every message so far, each with when it was read; waits up to ``wait_s`` for
        the next (0: takes only what has arrived)."""
        self.sock.settimeout(wait_s)
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return self.messages
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def seen(self, message: str) -> bool:
        return any(m == message for _, m in self.drain())

    def close(self) -> None:
        self.sock.close()


def parent_pid(proc_entry: Path) -> int | None:
    try:
        status = (proc_entry / "status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("PPid:"))


def pings_between(notify: NotifySocket, seconds: float) -> list[str]:
    notify.drain()
    since = time.monotonic()
    deadline = since + seconds
    while time.monotonic() < deadline:
        notify.drain()
    return [m for t, m in notify.drain() if t >= since and m == "WATCHDOG=1"]


def test_a_wedged_speech_engine_holds_up_only_its_item_and_the_watchdog_stays_fed(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    # A TTS engine that never returns. It used to block the control loop inside it (and
    # the watchdog stopped, as it should for a wedged loop); the tts thread renders now,
    # so the deciding thread turns on and systemd has no reason to restart the agent.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hung = bin_dir / "espeak-ng"
    write_script(hung, "#!/bin/sh\nexec sleep 600\n")
    start = whole_second(6)
    source.publish([{"id": "p-tts", "title": "Thông báo", "priority": "scheduled",
                     "source": {"type": "tts", "text": "Kính mời bà con"},
                     "start": local_time(start)}])
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        agent = agent_factory(start=False)
        agent.start(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1500000",
                         "PATH": f"{bin_dir}:/usr/bin:/bin"})
        wait_for(lambda: notify.seen("READY=1"), 10, what="READY=1")
        wait_for(lambda: sum(m == "WATCHDOG=1" for _, m in notify.drain()) >= 3, 10,
                 what="watchdog pings while healthy")
        time.sleep(max(0.0, start - time.time()) + 1.0)  # its start came, unrendered
        assert len(pings_between(notify, 3)) >= 3, "the watchdog stopped for one text"
        assert agent.process is not None and agent.process.poll() is None
    finally:
        notify.close()


def test_watchdog_pings_stop_while_the_playout_process_does_not_answer(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    """Every playout process is stopped (SIGSTOP) as soon as it exists: the agent replaces
    each one that stops answering, and feeds systemd's watchdog only once one answers."""
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        agent = agent_factory(start=False)
        agent.start(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1500000"})
        wait_for(lambda: notify.seen("READY=1"), 10, what="READY=1")
        wait_for(lambda: sum(m == "WATCHDOG=1" for _, m in notify.drain()) >= 3, 10,
                 what="watchdog pings while healthy")
        assert agent.process is not None
        stopped: set[int] = set()
        notify.drain()
        deadline = time.monotonic() + 4.0
        since = time.monotonic() + 1.0  # the last ping of the healthy process may be late
        while time.monotonic() < deadline:
            for pid, entry in processes(b"agent.playout.host"):
                # Only this agent's: other tests' agents run beside it.
                if pid not in stopped and parent_pid(entry) == agent.process.pid:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
            notify.drain(0.0)  # each ping with the time it came
            time.sleep(0.01)
        late = [m for t, m in notify.drain() if t >= since and m == "WATCHDOG=1"]
        assert len(stopped) >= 2, "the agent did not replace its stopped playout process"
        assert late == [], "the watchdog was fed while no playout process answered"
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        wait_for(lambda: sum(m == "WATCHDOG=1" for _, m in notify.drain()) >= 3, 15,
                 what="watchdog pings once a playout process answers again")
        assert agent.process.poll() is None
    finally:
        notify.close()


def test_status_line_and_a_reload_bracketed_by_reloading_and_ready(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        agent = agent_factory(start=False)
        agent.start(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "30000000"})
        wait_for(lambda: notify.seen("READY=1"), 10, what="READY=1")
        wait_for(lambda: any(m.startswith("STATUS=idle; ") for _, m in notify.drain()), 10,
                 what="a STATUS= line saying nothing plays")
        seen = len(notify.drain())
        assert agent.process is not None
        agent.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "READY=1" in [m for _, m in notify.drain()[seen:]], 10,
                 what="READY=1 after the reload")
        after = [m for _, m in notify.messages[seen:] if m != "WATCHDOG=1"]
        assert after[0] == "RELOADING=1" and after[1].startswith("MONOTONIC_USEC=")
        assert after.index("READY=1") > 1
    finally:
        notify.close()
