"""Log lines for the journal, each prefixed with its syslog priority (``<4>`` for a warning).

journald reads such a prefix on a service's stdout/stderr (``SyslogLevelPrefix=``, on by
default; sd-daemon(3)) and files the line at that priority, so ``journalctl -p warning``
shows the agent's warnings and errors. Without the prefix every line would be "info". The
prefix is only written when stderr really is the journal stream systemd connected
(``JOURNAL_STREAM``, systemd.exec(5)): a terminal or a redirected file gets plain lines,
each starting with the local time to the millisecond (journald stamps its entries itself).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

DAEMON_FORMAT = "%(levelname)s %(threadName)s %(name)s: %(message)s"
STAMP_FORMAT = "%(asctime)s.%(msecs)03d "
STAMP_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# syslog(3) priorities, from the most severe level down; anything below DEBUG is debug too.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))
_DEBUG_PRIORITY = 7


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return _DEBUG_PRIORITY


class JournalPriorityFormatter(logging.Formatter):
    """Prefixes every line of a record (a traceback's too: journald files each line as an
    entry of its own) with ``<N>``, the record's syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal(stream: TextIO, environ: dict[str, str] | os._Environ[str]) -> bool:
    """True when ``stream`` is the journal stream that JOURNAL_STREAM ("device:inode")
    names; a child that inherited the variable but not the stream gets False."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):  # closed, or not backed by a file descriptor
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def configure_logging(level: int | str, fmt: str = DAEMON_FORMAT) -> None:
    """The root logger writes to stderr, with priority prefixes when that is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal(sys.stderr, os.environ)
    handler.setFormatter(JournalPriorityFormatter(fmt) if journal
                         else logging.Formatter(STAMP_FORMAT + fmt, STAMP_DATE_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
