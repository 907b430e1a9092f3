"""The health endpoint of the real agent (health-http.md): the bearer token, /healthz ok
then degraded while an error fault is raised, /status against its schema, /metrics as
Prometheus text with plausible values while a program plays and after commands, and
slow-loris clients that do not keep /healthz from others."""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AgentFactory, Source, program, wait_ready, whole_second
from tests.support import media
from tests.support.agentproc import AgentProcess, wait_for
from tests.support.central_checks import CheckedCentral, start_online
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import validate

TOKEN = "s3cret-health-token"
PATHS = ("/healthz", "/status", "/metrics")
PROMPT_S = 1.0  # an answer to /healthz while slow clients hold connections
LORIS_CLIENTS = 8  # health.max_connections' default


def get(agent: AgentProcess, path: str, token: str | None = None) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(agent.health_url + path, headers=headers, timeout=5)


def healthz(agent: AgentProcess) -> tuple[int, dict[str, object]]:
    reply = get(agent, "/healthz")
    body = reply.json()
    validate("healthz", body)
    return reply.status_code, body


def samples(agent: AgentProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name without prefix, labels)."""
    reply = get(agent, "/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            name = sample.name.removeprefix("broadcast_agent_")
            found[(name, frozenset(sample.labels.items()))] = float(sample.value)
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no sample {name}{labels}; have {sorted({k[0] for k in found})}"
    return found[key]


def test_every_path_needs_the_token(source: Source, agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory(start=False, health={"token": TOKEN})
    agent.start(wait=False)
    wait_for(lambda: _answers(agent), 20, 0.1, f"the health endpoint ({agent.log_tail()})")
    for path in PATHS:
        assert get(agent, path).status_code == 401, path
        assert get(agent, path, "wrong-token").status_code == 401, path
        refused = requests.get(agent.health_url + path, timeout=5,
                               headers={"Authorization": TOKEN})  # no Bearer scheme
        assert refused.status_code == 401, path
        assert get(agent, path, TOKEN).status_code == 200, path
    validate("status", get(agent, "/status", TOKEN).json())


def _answers(agent: AgentProcess) -> bool:
    try:
        return get(agent, "/healthz", TOKEN).status_code == 200
    except requests.RequestException:
        return False


def test_healthz_is_degraded_while_an_error_fault_is_raised(
        source: Source, agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory()
    wait_ready(agent, source.version)
    assert healthz(agent) == (200, {"status": "ok"})
    source.set_faults(schedule_status=401)
    wait_for(lambda: healthz(agent)[0] == 503, 10, 0.1, "503 degraded")
    status, body = healthz(agent)
    assert (status, body["status"]) == (503, "degraded")
    faults = {f["code"]: f for f in body["faults"]}  # type: ignore[attr-defined]
    assert faults["source_auth"]["severity"] == "error"
    assert "source_auth" in agent.fault_codes()
    source.set_faults(schedule_status=None)
    wait_for(lambda: healthz(agent) == (200, {"status": "ok"}), 10, 0.1, "ok again")


def test_status_and_metrics_while_playing_and_after_commands(
        tmp_path: Path, source: Source, agent_factory: AgentFactory,
        broker: Mosquitto, central: CheckedCentral) -> None:
    source.add("m-1", media.tone(tmp_path / "m1.wav", 440, 3.0))
    source.add("m-2", media.tone(tmp_path / "m2.wav", 660, 1.0))
    start = whole_second(10)
    source.publish([program("p-1", ["m-1", "m-2"], start)], version=7)
    agent = start_online(agent_factory, broker, central)
    wait_ready(agent, 7)
    validate("status", get(agent, "/status").json())
    idle = samples(agent)
    assert value(idle, "schedule_version") == 7
    assert value(idle, "cache_items") == 2
    assert value(idle, "cache_missing") == 0
    assert value(idle, "cache_bytes") > 0
    assert value(idle, "playing", source="media", priority="scheduled") == 0
    assert value(idle, "mqtt_connected") == 1
    assert value(idle, "uptime_seconds") > 0
    assert value(idle, "last_sync_timestamp_seconds") > time.time() - 60
    assert value(idle, "volume_percent") == 100
    assert value(idle, "outbox_depth", channel="mqtt") >= 0
    assert math.isnan(value(idle, "playout_buffered_seconds"))
    # Each turn of the deciding thread is timed (it applied the schedule at least).
    assert value(idle, "control_tick_seconds_count") >= 1
    assert value(idle, "control_tick_seconds_bucket", le="+Inf") == \
        value(idle, "control_tick_seconds_count")

    time.sleep(max(0.0, start + 1.0 - time.time()))
    playing = samples(agent)  # not preceded by /status: metrics are current on their own
    assert value(playing, "playing", source="media", priority="scheduled") == 1
    assert value(playing, "playing", source="media", priority="emergency") == 0
    assert value(playing, "amplifier_on") == 1
    # A 3 s file decodes well ahead of the card (decoder_worker: about 2 s).
    assert 0.5 < value(playing, "playout_buffered_seconds") < 3.0
    status = get(agent, "/status").json()
    validate("status", status)
    assert status["playing"]["program_id"] == "p-1"

    volume = central.command("set_volume", {"volume": 60})
    central.send_accepted(volume)
    central.wait_ack(volume["id"], "completed", timeout=3)
    bad = central.command("set_volume", {"volume": 101})
    central.send(bad)
    central.wait_ack(bad["id"], "rejected", timeout=1.0)
    done = samples(agent)
    assert value(done, "commands_total", type="set_volume", status="accepted") == 1
    assert value(done, "commands_total", type="set_volume", status="completed") == 1
    assert value(done, "commands_total", type="set_volume", status="rejected") == 1
    assert value(done, "volume_percent") == 60
    wait_for(lambda: agent.status()["playing"] is None, 10, 0.1, "the program to end")
    assert value(samples(agent), "playing", source="media", priority="scheduled") == 0


def test_media_downloads_are_counted(tmp_path: Path, source: Source,
                                     agent_factory: AgentFactory) -> None:
    wav = media.tone(tmp_path / "m1.wav", 440, 1.0)
    source.add("m-1", wav)
    source.publish([])
    agent = agent_factory()
    wait_ready(agent, source.version)
    found = samples(agent)
    assert value(found, "download_bytes_total") == wav.stat().st_size
    assert sum(v for (name, _), v in found.items() if name == "downloads_total") == 1


def test_slow_loris_clients_do_not_keep_healthz_from_others(
        source: Source, agent_factory: AgentFactory) -> None:
    source.publish([])
    agent = agent_factory()
    host, port = agent.health_url.removeprefix("http://").rsplit(":", 1)
    stop = threading.Event()
    threads = [threading.Thread(target=_loris, args=(host, int(port), stop), daemon=True)
               for _ in range(LORIS_CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)  # every slow client is connected and dribbling
        for _ in range(10):
            began = time.monotonic()
            reply = get(agent, "/healthz")
            elapsed = time.monotonic() - began
            assert reply.status_code == 200
            assert elapsed < PROMPT_S, f"/healthz took {elapsed:.2f} s under slow loris"
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert agent.process is not None and agent.process.poll() is None


def _loris(host: str, port: int, stop: threading.Event) -> None:
    """A client sending its request one byte a second, reconnecting when cut off."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    while not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                for byte in request:
                    if stop.wait(1.0):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            stop.wait(0.2)
