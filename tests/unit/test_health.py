"""HealthServer over real loopback sockets."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypedDict, Unpack

import pytest
from prometheus_client.parser import text_string_to_metric_families

import agent
from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.http.health import HealthServer
from agent.http.metrics import AgentMetrics

TOKEN = "s3cret-token"
STATUS = {"device_id": "dev-1", "online": True, "volume": 70, "playing": None,
          "title": "Bản tin sáng"}


class Harness:
    def __init__(self, token: str | None = TOKEN, max_connections: int = 4,
                 request_timeout_s: float = 2.0,
                 status_provider: Callable[[], dict[str, Any]] = lambda: STATUS) -> None:
        self.clock = ManualClock()
        self.faults = FaultRegistry(self.clock.now)
        self.metrics = AgentMetrics(self.clock)
        self.faults.subscribe(self.metrics.on_fault)
        self.server = HealthServer("127.0.0.1", 0, token, max_connections, request_timeout_s,
                                   status_provider, self.faults, self.metrics)
        self.server.start()

    def request(self, path: str, token: str | None = TOKEN, method: str = "GET",
                headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


class HarnessOptions(TypedDict, total=False):
    """Harness's options."""

    token: str | None
    max_connections: int
    request_timeout_s: float
    status_provider: Callable[[], dict[str, Any]]


class MakeHarness(Protocol):
    def __call__(self, **options: Unpack[HarnessOptions]) -> Harness: ...


@pytest.fixture
def make() -> Iterator[MakeHarness]:
    started: list[Harness] = []

    def factory(**kw: Unpack[HarnessOptions]) -> Harness:
        started.append(Harness(**kw))
        return started[-1]

    yield factory
    for harness in started:
        harness.server.stop(5)
        assert not harness.server._thread or not harness.server._thread.is_alive()


def test_healthz_ok_then_degraded_only_for_error_faults(make: MakeHarness) -> None:
    h = make()
    assert h.request("/healthz")[0::2] == (200, b'{"status": "ok"}')
    h.faults.raise_("mqtt_unreachable", "broker down")  # a warning
    assert h.request("/healthz")[0] == 200
    h.faults.raise_("audio_output", "no sound card")
    status, headers, body = h.request("/healthz")
    assert status == 503 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "degraded"
    assert {f["code"]: f["severity"] for f in doc["faults"]} == \
        {"mqtt_unreachable": "warning", "audio_output": "error"}
    h.faults.clear("audio_output")
    assert h.request("/healthz")[0] == 200


@pytest.mark.parametrize("path", ["/healthz", "/status", "/metrics", "/nothing"])
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_token_is_required_everywhere(make: MakeHarness, path: str, token: str | None) -> None:
    status, headers, _ = make().request(path, token=token)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"


def test_no_token_configured_means_open(make: MakeHarness) -> None:
    assert make(token=None).request("/healthz", token=None)[0] == 200


def test_status_is_the_status_json(make: MakeHarness) -> None:
    status, headers, body = make().request("/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == STATUS


def test_metrics_parse_as_prometheus_text(make: MakeHarness) -> None:
    h = make()
    h.metrics.playing("media", "scheduled")
    h.metrics.command("emergency", "accepted")
    h.faults.raise_("disk_full", "0 bytes free")
    status, headers, body = h.request("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("uptime_seconds", "playing", "volume_percent", "amplifier_on", "cache_items",
                 "cache_bytes", "cache_missing", "schedule_version",
                 "last_sync_timestamp_seconds", "downloads", "download_bytes",
                 "mqtt_connected", "outbox_depth", "faults_raised", "commands",
                 "fm_signal_dbfs", "command_payloads_dropped"):
        assert f"broadcast_agent_{name}" in families, name
    playing = {(s.labels["source"], s.labels["priority"]): s.value
               for s in families["broadcast_agent_playing"].samples}
    assert playing[("media", "scheduled")] == 1 and sum(playing.values()) == 1
    commands = [s for s in families["broadcast_agent_commands"].samples
                if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in commands] == \
        [({"type": "emergency", "status": "accepted"}, 1.0)]
    raised = [s for s in families["broadcast_agent_faults_raised"].samples
              if s.name.endswith("_total")]
    assert [(s.labels["code"], s.value) for s in raised] == [("disk_full", 1.0)]
    build = families["broadcast_agent_build_info"].samples
    assert [(s.labels, s.value) for s in build] == [({"version": agent.__version__}, 1.0)]
    rss = families["process_resident_memory_bytes"].samples[0].value
    assert 10e6 < rss < 10e9  # this test process's, from /proc
    assert families["process_cpu_seconds"].samples[0].value > 0
    assert not [s.name for f in families.values() for s in f.samples
                if s.name.endswith("_created")]


def test_unknown_path_method_and_bodies(make: MakeHarness) -> None:
    h = make()
    assert h.request("/")[0] == 404
    assert h.request("/healthz/../status")[0] == 404
    status, headers, _ = h.request("/healthz", method="POST", body=b"x")
    assert status == 405 and headers["Allow"] == "GET"
    assert h.request("/healthz", method="DELETE")[0] == 405
    assert h.request("/healthz", headers={"Content-Length": "5"}, body=b"hello")[0] == 413
    assert h.request("/healthz?verbose=1")[0] == 200


def test_oversized_headers_are_refused(make: MakeHarness) -> None:
    h = make()
    status, _, _ = h.request("/healthz", headers={"X-Padding": "a" * 9000})
    assert status == 431
    assert h.request("/healthz")[0] == 200


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", [b"GARBAGE\r\n\r\n", b"GET /healthz\r\n\r\n",
                                           b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n"])
def test_malformed_requests_get_400(make: MakeHarness, request_bytes: bytes) -> None:
    h = make(token=None)
    assert raw_exchange(h.server.port, request_bytes).startswith(b"HTTP/1.1 400 ")


def test_a_failing_status_provider_gives_500_and_the_server_lives_on(make: MakeHarness) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("arbiter lock poisoned")

    h = make(status_provider=broken)
    assert h.request("/status")[0] == 500
    assert h.request("/healthz")[0] == 200


def test_a_silent_client_is_cut_off_after_the_request_timeout(make: MakeHarness) -> None:
    h = make(request_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", h.server.port), timeout=10) as s:
        s.sendall(b"GET /heal")
        assert s.recv(100) == b""  # closed by the server, nothing answered


def test_slow_loris_does_not_keep_others_from_healthz(make: MakeHarness) -> None:
    h = make(max_connections=4, request_timeout_s=30.0)
    stop = threading.Event()
    lorises = [socket.create_connection(("127.0.0.1", h.server.port)) for _ in range(12)]

    def drip() -> None:  # one byte a second on every connection, forever
        while not stop.is_set():
            for s in lorises:
                with contextlib.suppress(OSError):
                    s.send(b"X")
            stop.wait(1.0)

    dripper = threading.Thread(target=drip, name="loris")
    dripper.start()
    try:
        time.sleep(0.2)  # let every loris connection be accepted first
        for _ in range(5):
            assert h.request("/healthz")[0] == 200
    finally:
        stop.set()
        dripper.join(5)
        for s in lorises:
            s.close()


def test_port_in_use_fails_at_start(make: MakeHarness) -> None:
    h = make()
    with pytest.raises(OSError):
        HealthServer("127.0.0.1", h.server.port, None, 4, 2.0, lambda: STATUS, h.faults,
                     h.metrics).start()


def test_hostile_clients_cost_no_traceback(make: MakeHarness,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Idle connections, a 10 MB header, random bytes: answered or dropped, with no
    traceback in the log."""
    harness = make()
    port = harness.server.port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    junk = [b"\x00\xff" * 5000, b"GET / HTTP/1.1\r\nX: " + b"a" * 10_000_000 + b"\r\n\r\n",
            bytes(range(256)) * 40 + b"\r\n\r\n", b"\r\n\r\n", b"GET\r\n\r\n"]
    for data in junk:
        with socket.create_connection(("127.0.0.1", port)) as sock, \
                contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1024)
    for sock in idle:
        sock.close()
    assert harness.request("/healthz")[0] == 200
    assert not [r for r in caplog.records if r.exc_info]
