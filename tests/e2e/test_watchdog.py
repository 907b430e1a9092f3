"""systemd readiness and watchdog, seen from a real NOTIFY_SOCKET of the test."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.conftest import AgentFactory, Source, whole_second
from tests.support.agentproc import local_time, wait_for


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[tuple[float, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def seen(self, message: str) -> bool:
        return any(m == message for _, m in self.drain())

    def close(self) -> None:
        self.sock.close()


def test_ready_then_watchdog_pings_stop_when_the_control_loop_hangs(
        tmp_path: Path, source: Source, agent_factory: AgentFactory) -> None:
    # A TTS engine that never returns: the control loop blocks inside it, exactly like a
    # wedged child process would block it on a pole.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hung = bin_dir / "espeak-ng"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
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
        # The program is pre-rolled 1.5 s before its start; the loop hangs then.
        time.sleep(max(0.0, start - time.time()) + 6.5)
        notify.drain()
        since = time.monotonic()
        time.sleep(3)
        late = [m for t, m in notify.drain() if t >= since and m == "WATCHDOG=1"]
        assert late == [], "the watchdog was fed while the control loop was hung"
        assert agent.process is not None and agent.process.poll() is None
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
