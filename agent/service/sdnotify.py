"""The sd_notify protocol: one datagram to the socket systemd names in NOTIFY_SOCKET.

See sd_notify(3). A path starting with '@' is in the Linux abstract namespace (the '@'
stands for a leading NUL byte). Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


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
