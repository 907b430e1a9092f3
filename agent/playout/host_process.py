"""One playout process (``python -m agent.playout.host``) as the agent holds it: started on
the card, spoken to through its channel (agent.playout.channel), killed when it dies or
hangs. :class:`~agent.playout.remote.PlayoutProcess` decides when, and replaces it."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys

from agent.playout import channel

log = logging.getLogger(__name__)


class HostProcess:
    def __init__(self, output_spec: str, rate: int, *, record_fd: int | None, tally_fd: int,
                 resume: bool, interpreter: str = sys.executable) -> None:
        """Start it with ``interpreter``; with ``resume`` it continues the card's capture
        of the one before. ``tally_fd``: agent.playout.tally's shared memory."""
        ours, theirs = channel.socket_pair()
        pass_fds = [theirs.fileno(), tally_fd]
        command = [interpreter, "-m", "agent.playout.host", "--output", output_spec,
                   "--rate", str(rate), "--channel-fd", str(theirs.fileno()),
                   "--tally-fd", str(tally_fd),
                   "--log-level", logging.getLevelName(logging.getLogger().level)]
        if record_fd is not None:
            pass_fds.append(record_fd)
            command += ["--record-fd", str(record_fd)]
        if resume:
            command.append("--resume")
        try:
            self._proc = subprocess.Popen(command, pass_fds=pass_fds, stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(channel.STATUS_INTERVAL_S)
        self._sock = ours  # receives, with a timeout
        self._sender = ours.dup()  # sends, never blocks
        self._sender.setblocking(False)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, message: channel.Message, fds: list[int] | None = None) -> None:
        """To the process, if it can take it now; otherwise it is dead or hung, and its
        successor gets the whole state."""
        try:
            channel.send(self._sender, message, fds)
        except (channel.ChannelClosed, BlockingIOError) as exc:
            log.warning("playout process not taking %s: %s", message.get("op"), exc)

    def receive(self) -> channel.Message:
        """Its next message; TimeoutError after ``channel.STATUS_INTERVAL_S`` without one,
        ChannelClosed once it closed the channel."""
        message, fds = channel.receive(self._sock)
        for fd in fds:  # it never sends any; never leak one
            socket.close(fd)
        return message

    def exit_reason(self) -> str | None:
        """How it exited, or None while it runs."""
        code = self._proc.poll()
        return None if code is None else f"exited with {_exit_status(code)}"

    def closed_reason(self) -> str:
        """Why it closed its channel: how it exited, or that it did not (yet)."""
        code = _wait(self._proc)
        return "closed its channel" if code is None else f"exited with {_exit_status(code)}"

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        _wait(self._proc)

    def wait_or_kill(self, timeout: float) -> None:
        """Wait for it to exit (it was told to stop); killed after ``timeout``."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the playout process did not stop within %.0f s: killed", timeout)
            self._proc.kill()
            self._proc.wait(timeout)

    def close_channel(self) -> None:
        self._sock.close()
        self._sender.close()


def _wait(proc: subprocess.Popen[bytes], timeout: float = 2.0) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _exit_status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
