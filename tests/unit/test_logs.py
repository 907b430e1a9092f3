"""Journal priority prefixes on log lines (agent/service/logs.py)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.service.logs import JournalPriorityFormatter, stderr_is_journal
from tests.support.agentproc import REPO


def record(level: int, message: str, exc_info: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.LogRecord("agent", level, __file__, 1, message, None, info)


@pytest.mark.parametrize(("level", "prefix"), [
    (logging.CRITICAL, "<2>"), (logging.ERROR, "<3>"), (logging.WARNING, "<4>"),
    (logging.INFO, "<6>"), (logging.DEBUG, "<7>"), (5, "<7>"),
])
def test_each_level_gets_its_syslog_priority(level: int, prefix: str) -> None:
    line = JournalPriorityFormatter("%(levelname)s %(message)s").format(record(level, "x"))
    assert line == f"{prefix}{logging.getLevelName(level)} x"


def test_every_line_of_a_traceback_carries_the_priority() -> None:
    try:
        raise RuntimeError("amplifier relay stuck")
    except RuntimeError:
        text = JournalPriorityFormatter("%(message)s").format(
            record(logging.ERROR, "relay\nfailed", exc_info=True))
    lines = text.split("\n")
    assert lines[:3] == ["<3>relay", "<3>failed", "<3>Traceback (most recent call last):"]
    assert lines[-1] == "<3>RuntimeError: amplifier relay stuck"
    assert all(line.startswith("<3>") for line in lines)


def test_only_the_stream_that_journal_stream_names_is_the_journal(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as journal, open(tmp_path / "b", "w") as other:
        stat = os.fstat(journal.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert stderr_is_journal(journal, environ)
        assert not stderr_is_journal(other, environ)
        assert not stderr_is_journal(journal, {})
        assert not stderr_is_journal(journal, {"JOURNAL_STREAM": "garbage"})


def agent_logs(stderr_path: Path, journal: bool) -> str:
    """The lines a real process writes to stderr after the daemon's logging set-up."""
    code = ("import logging; from agent.service.logs import configure_logging; "
            "configure_logging('INFO'); log = logging.getLogger('agent'); "
            "log.info('started'); log.warning('mixer control missing'); log.debug('hidden')")
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(REPO)
    with open(stderr_path, "w") as stderr:
        if journal:  # as systemd does for StandardError=journal
            stat = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        subprocess.run([sys.executable, "-c", code], stderr=stderr, env=env, check=True,
                       timeout=30)
    return stderr_path.read_text()


def test_the_daemon_writes_priorities_only_into_the_journal(tmp_path: Path) -> None:
    assert agent_logs(tmp_path / "journal", journal=True) == (
        "<6>INFO MainThread agent: started\n"
        "<4>WARNING MainThread agent: mixer control missing\n")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
    assert re.fullmatch(
        f"{stamp}INFO MainThread agent: started\n"
        f"{stamp}WARNING MainThread agent: mixer control missing\n",
        agent_logs(tmp_path / "terminal", journal=False))
