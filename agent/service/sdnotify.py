"""The sd_notify protocol: one datagram to the socket systemd names in NOTIFY_SOCKET.

See sd_notify(3). A path starting with '@' is in the Linux abstract namespace (the '@'
stands for a leading NUL byte). Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

STATUS_MESSAGE_MAX = 100


def _socket_address(environ: dict[str, str] | os._Environ[str]) -> str | None:
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1", "STATUS=playing", "WATCHDOG=1", "STOPPING=1"; several
    assignments separated by newlines). True when the datagram was sent, False when not
    running under systemd or the send failed (logged: systemd will act on the silence)."""
    address = _socket_address(os.environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as error:
        log.warning("sd_notify %r to %s failed: %s", state, os.environ["NOTIFY_SOCKET"], error)
        return False
    return True


def watchdog_interval() -> float | None:
    """The service's watchdog timeout in seconds (WATCHDOG_USEC), or None when systemd
    expects no keep-alive from this process. Ping at half this interval, as sd_watchdog_enabled(3)
    recommends."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


@contextlib.contextmanager
def reloading() -> Iterator[None]:
    """Around a config reload: RELOADING=1 (with the CLOCK_MONOTONIC time that systemd 253+
    requires beside it) before, READY=1 after, whether the reload was applied, refused or
    failed, so systemd never sees the service stuck in "reloading"."""
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        yield
    finally:
        notify("READY=1")


def status_text(status: Mapping[str, Any]) -> str:
    """The Status object (mqtt.md) as the one line `systemctl status` shows: what plays and
    the latest of the active faults."""
    playing = status.get("playing")
    if playing is None:
        what = "idle"
    else:
        title = playing.get("title")
        what = f"playing {playing['priority']} {playing['source']} {playing['program_id']}" + (
            f' "{title}"' if title else "")
    faults = status.get("faults") or []
    if not faults:
        return f"{what}; no faults"
    last = max(faults, key=lambda fault: str(fault["since"]))
    message = str(last["message"])
    if len(message) > STATUS_MESSAGE_MAX:  # an exception's text can run to hundreds
        message = message[:STATUS_MESSAGE_MAX - 1] + "…"
    more = f" (+{len(faults) - 1} more)" if len(faults) > 1 else ""
    return f"{what}; last fault: {last['code']}: {message}{more}"


class StatusLine:
    """STATUS= for `systemctl status`, sent only when the line changes."""

    def __init__(self) -> None:
        self._shown: str | None = None

    def show(self, status: Mapping[str, Any]) -> None:
        text = status_text(status)
        if text != self._shown and notify(f"STATUS={text}"):
            self._shown = text
