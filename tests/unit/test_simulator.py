"""The source-system simulator over real loopback HTTP, as a plain HTTP client sees it."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import public_key_from_raw, public_key_of, verify_bytes
from tests.support.agentproc import wait_for
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import (
    DEVICE,
    TOKEN,
    add_media,
    media_bytes,
    schedule_doc,
    write_schedule,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def content(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def sim(content: Path) -> Iterator[SourceSimulator]:
    key = Ed25519PrivateKey.generate()
    with SourceSimulator(content, DEVICE, TOKEN, signing_key=key) as running:
        yield running


def schedule_url(sim: SourceSimulator, device: str = DEVICE) -> str:
    return f"{sim.url}/devices/{device}/schedule"


def test_schedule_etag_and_304(sim: SourceSimulator, content: Path) -> None:
    body = write_schedule(content, schedule_doc(1, DEVICE, []))
    first = requests.get(schedule_url(sim), headers=AUTH, timeout=5)
    assert first.status_code == 200
    assert first.content == body
    assert first.headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    again = requests.get(schedule_url(sim), timeout=5,
                         headers={**AUTH, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert sim.stats()["requests"] == {"schedule": 2, "schedule_200": 1, "schedule_304": 1,
                                       "with_authorization": 2}


def test_schedule_signature_covers_exact_body(sim: SourceSimulator, content: Path) -> None:
    write_schedule(content, schedule_doc(1, DEVICE, []))
    answer = requests.get(schedule_url(sim), headers=AUTH, timeout=5)
    assert sim.signing_key is not None
    assert verify_bytes(answer.content, answer.headers["X-Signature"],
                        public_key_of(sim.signing_key))
    sim.set_faults(sign=False)
    assert "X-Signature" not in requests.get(schedule_url(sim), headers=AUTH, timeout=5).headers


def test_schedule_file_is_reloaded_when_it_changes(sim: SourceSimulator, content: Path) -> None:
    write_schedule(content, schedule_doc(1, DEVICE, []))
    etag1 = requests.get(schedule_url(sim), headers=AUTH, timeout=5).headers["ETag"]
    write_schedule(content, schedule_doc(2, DEVICE, []))
    answer = requests.get(schedule_url(sim), headers={**AUTH, "If-None-Match": etag1}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["version"] == 2


@pytest.mark.parametrize(("headers", "device", "status"), [
    ({}, DEVICE, 401),
    ({"Authorization": "Bearer wrong"}, DEVICE, 403),
    (AUTH, "another-device", 404),
])
def test_schedule_refusals(sim: SourceSimulator, content: Path, headers: dict[str, str],
                           device: str, status: int) -> None:
    write_schedule(content, schedule_doc(1, DEVICE, []))
    assert requests.get(schedule_url(sim, device), headers=headers, timeout=5).status_code \
        == status


def test_media_full_and_range(sim: SourceSimulator, content: Path) -> None:
    data = media_bytes(300_000, seed=1)
    add_media(content, "m-1", data, duration_s=3.0)
    full = requests.get(f"{sim.url}/media/m-1", headers=AUTH, timeout=5)
    assert (full.status_code, full.content) == (200, data)
    part = requests.get(f"{sim.url}/media/m-1", headers={**AUTH, "Range": "bytes=1000-"},
                        timeout=5)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert part.content == data[1000:]
    past_end = requests.get(f"{sim.url}/media/m-1",
                            headers={**AUTH, "Range": f"bytes={len(data)}-"}, timeout=5)
    assert past_end.status_code == 416
    # The server counts each chunk once it wrote it, which may be after the client has
    # read the whole body.
    wait_for(lambda: sim.stats()["media_bytes"] == {"m-1": len(data) + len(data) - 1000}, 5,
             what="the simulator's count of the bytes it sent")


def test_media_fault_switches(sim: SourceSimulator, content: Path) -> None:
    data = media_bytes(200_000, seed=2)
    add_media(content, "m-1", data, duration_s=2.0)
    url = f"{sim.url}/media/m-1"
    sim.set_faults(ignore_range=True)
    ignored = requests.get(url, headers={**AUTH, "Range": "bytes=10-"}, timeout=5)
    assert (ignored.status_code, ignored.content) == (200, data)
    sim.set_faults(ignore_range=False, wrong_hash=True)
    flipped = requests.get(url, headers=AUTH, timeout=5).content
    assert len(flipped) == len(data) and flipped != data
    sim.set_faults(wrong_hash=False, truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers=AUTH, timeout=5)
    sim.set_faults(truncate=False, media_status=503)
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 503


def test_admin_fault_endpoint_and_garbage(sim: SourceSimulator, content: Path) -> None:
    write_schedule(content, schedule_doc(1, DEVICE, []))
    answer = requests.post(f"{sim.root_url}/_sim/faults", timeout=5,
                           json={"garbage_json": True, "schedule_status": None})
    assert answer.status_code == 200 and answer.json()["garbage_json"] is True
    body = requests.get(schedule_url(sim), headers=AUTH, timeout=5).content
    with pytest.raises(ValueError):
        json.loads(body)
    requests.post(f"{sim.root_url}/_sim/faults", json={"schedule_status": 503}, timeout=5)
    assert requests.get(schedule_url(sim), headers=AUTH, timeout=5).status_code == 503
    bad = requests.post(f"{sim.root_url}/_sim/faults", json={"no_such_switch": 1}, timeout=5)
    assert bad.status_code == 400 and "no_such_switch" in bad.json()["error"]


def test_reports_are_stored_once_by_id(sim: SourceSimulator) -> None:
    url = f"{sim.url}/devices/{DEVICE}/reports"
    reports = [{"id": "r-1", "type": "status"}, {"id": "r-2", "type": "status"},
               {"type": "status"}]
    answer = requests.post(url, headers=AUTH, json={"reports": reports}, timeout=5)
    assert answer.json() == {"accepted": ["r-1", "r-2"]}
    requests.post(url, headers=AUTH, json={"reports": reports[:1]}, timeout=5)
    stored = requests.get(f"{sim.root_url}/_sim/reports", timeout=5).json()
    assert [r["id"] for r in stored] == ["r-1", "r-2"]
    garbage = requests.post(url, headers=AUTH, data=b"[1, 2", timeout=5)
    assert garbage.status_code == 400
    sim.set_faults(reports_status=500)
    assert requests.post(url, headers=AUTH, json={"reports": [{"id": "r-3"}]},
                         timeout=5).status_code == 500
    assert len(sim.reports()) == 2


def test_console_script_serves_and_prints_url(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "sim.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    write_schedule(tmp_path, schedule_doc(4, DEVICE, []))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.support.simulator import main; raise SystemExit(main())",
         "--dir", str(tmp_path), "--device-id", DEVICE, "--token", TOKEN,
         "--signing-key-file", str(key_file)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        public = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v1")
        raw_public = base64.b64decode(public.removeprefix("public_key: "))
        answer = requests.get(f"{url}/devices/{DEVICE}/schedule", headers=AUTH, timeout=5)
        assert answer.json()["version"] == 4
        assert verify_bytes(answer.content, answer.headers["X-Signature"],
                            public_key_from_raw(raw_public))
    finally:
        proc.terminate()
        proc.wait(5)
