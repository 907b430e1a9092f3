"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import sdnotify


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"broadcast-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_ready_and_watchdog_reach_a_path_socket(path_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=started")
    assert sdnotify.notify("WATCHDOG=1")
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=started"
    assert path_socket.recv(4096) == b"WATCHDOG=1"


def test_abstract_namespace_socket(abstract_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1")
    assert sdnotify.notify("STOPPING=1")
    assert abstract_socket.recv(4096) == b"READY=1"
    assert abstract_socket.recv(4096) == b"STOPPING=1"


def test_not_under_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_unusable_socket_value_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


def test_send_to_a_vanished_socket_reports_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("WATCHDOG=1") is False
    assert "sd_notify 'WATCHDOG=1'" in caplog.text


def test_watchdog_interval_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_interval() == 30.0


def test_watchdog_meant_for_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None


@pytest.mark.parametrize("usec", ["", "0", "soon"])
def test_watchdog_off(monkeypatch: pytest.MonkeyPatch, usec: str) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None


def test_reload_is_bracketed_by_reloading_and_ready(path_socket: socket.socket) -> None:
    before = time.monotonic_ns() // 1000
    with sdnotify.reloading():
        reloading = path_socket.recv(4096).decode().split("\n")
    after = time.monotonic_ns() // 1000
    assert reloading[0] == "RELOADING=1"
    key, _, usec = reloading[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert path_socket.recv(4096) == b"READY=1"


def test_a_failed_reload_still_ends_with_ready(path_socket: socket.socket) -> None:
    with pytest.raises(OSError), sdnotify.reloading():
        raise OSError("conf.d unreadable")
    assert path_socket.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert path_socket.recv(4096) == b"READY=1"


PLAYING = {"source": "media", "priority": "scheduled", "program_id": "p-1",
           "media_id": "m-101", "title": "Bản tin sáng", "started_at": "2026-11-23T06:00:00+07:00"}
FAULTS = [{"code": "stream_unavailable", "message": "stream down", "severity": "error",
           "since": "2026-11-23T06:05:00+07:00"},
          {"code": "disk_low", "message": "150 MB free", "severity": "warning",
           "since": "2026-11-23T06:09:00+07:00"}]


def test_status_text_says_what_plays_and_the_latest_fault() -> None:
    assert sdnotify.status_text({"playing": None, "faults": []}) == "idle; no faults"
    assert sdnotify.status_text({"playing": PLAYING, "faults": FAULTS}) == (
        'playing scheduled media p-1 "Bản tin sáng"; last fault: disk_low: 150 MB free '
        "(+1 more)")
    assert sdnotify.status_text({"playing": {**PLAYING, "title": ""}, "faults": FAULTS[:1]}) \
        == "playing scheduled media p-1; last fault: stream_unavailable: stream down"
    long = [{**FAULTS[0], "message": "x" * 300}]
    assert sdnotify.status_text({"playing": None, "faults": long}) == (
        f"idle; last fault: stream_unavailable: {'x' * 99}…")


def test_status_line_is_sent_only_when_it_changes(path_socket: socket.socket) -> None:
    line = sdnotify.StatusLine()
    line.show({"playing": None, "faults": []})
    line.show({"playing": None, "faults": []})
    line.show({"playing": PLAYING, "faults": []})
    assert path_socket.recv(4096) == b"STATUS=idle; no faults"
    assert path_socket.recv(4096).decode() == \
        'STATUS=playing scheduled media p-1 "Bản tin sáng"; no faults'
    path_socket.settimeout(0.2)
    with pytest.raises(TimeoutError):
        path_socket.recv(4096)
