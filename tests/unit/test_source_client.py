"""SourceClient against the real simulator: every answer maps to the contract's fault code."""

from __future__ import annotations

import base64
import logging
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import load_config
from agent.source.client import SourceClient, SourceError, SourceSettings
from tests.support.source_sim import DEVICE, add_media, schedule_doc, source_rig, write_schedule


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def test_new_then_unchanged(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        body = write_schedule(rig.content, schedule_doc(3, DEVICE, []))
        new = rig.client.fetch_schedule(None)
        assert new.changed and new.body == body and new.document["version"] == 3
        same = rig.client.fetch_schedule(new.etag)
        assert not same.changed and same.etag == new.etag and same.body == b""


def test_signed_schedule_is_accepted(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with source_rig(tmp_path, signing_key=key, public_key=raw_public(key)) as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        assert rig.client.fetch_schedule(None).document["version"] == 1


@pytest.mark.parametrize("case", ["unsigned", "other key"])
def test_missing_or_bad_signature_is_refused(tmp_path: Path, case: str) -> None:
    signer = Ed25519PrivateKey.generate()
    trusted = signer if case == "unsigned" else Ed25519PrivateKey.generate()
    with source_rig(tmp_path, signing_key=signer, public_key=raw_public(trusted)) as rig:
        rig.sim.set_faults(sign=case != "unsigned")
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == "schedule_signature"


def test_no_public_key_ignores_signatures(tmp_path: Path) -> None:
    with source_rig(tmp_path, signing_key=Ed25519PrivateKey.generate()) as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        assert rig.client.fetch_schedule(None).changed


@pytest.mark.parametrize(("switches", "code"), [
    ({"schedule_status": 503}, "source_unreachable"),
    ({"schedule_status": 500}, "source_unreachable"),
    ({"schedule_status": 401}, "source_auth"),
    ({"schedule_status": 403}, "source_auth"),
    ({"schedule_status": 404}, "source_unknown_device"),
    ({"schedule_status": 400}, "source_bad_response"),
    ({"garbage_json": True}, "source_bad_response"),
    ({"slow_s": 1.0}, "source_unreachable"),
])
def test_schedule_failures_map_to_fault_codes(tmp_path: Path, switches: dict[str, object],
                                              code: str) -> None:
    with source_rig(tmp_path, read_timeout_s=0.3) as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        rig.sim.set_faults(**switches)
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == code
        assert err.value.message


def test_wrong_token_is_source_auth(tmp_path: Path) -> None:
    with source_rig(tmp_path, client_token="not-it") as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == "source_auth"


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nothing listens
    client = SourceClient(SourceSettings(url=f"http://127.0.0.1:{port}/api/v1",
                                         device_id=DEVICE, connect_timeout_s=1.0))
    with pytest.raises(SourceError) as err:
        client.fetch_schedule(None)
    assert err.value.code == "source_unreachable"


@pytest.mark.parametrize(("base", "url", "resolved"), [
    ("https://h.invalid/api/v1", "/api/v1/media/m-1", "https://h.invalid/api/v1/media/m-1"),
    ("https://h.invalid/api/v1/", "media/m-1", "https://h.invalid/api/v1/media/m-1"),
    ("https://h.invalid/api/v1", "media/m-1", "https://h.invalid/api/media/m-1"),
    ("https://h.invalid/api/v1", "https://cdn.invalid/x.mp3", "https://cdn.invalid/x.mp3"),
])
def test_media_urls_resolve_by_rfc3986(base: str, url: str, resolved: str) -> None:
    assert SourceClient(SourceSettings(url=base, device_id=DEVICE)).resolve(url) == resolved


def test_media_range_and_ignored_range(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        data = bytes(range(256)) * 100
        entry = add_media(rig.content, "m-1", data, duration_s=1.0)
        with rig.client.open_media(entry["url"], 1000, "m-1") as body:
            assert body.start == 1000 and b"".join(body.chunks) == data[1000:]
        rig.sim.set_faults(ignore_range=True)
        with rig.client.open_media(entry["url"], 1000, "m-1") as body:
            assert body.start == 0 and b"".join(body.chunks) == data


def test_media_errors(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        with pytest.raises(SourceError) as err, rig.client.open_media("media/nope", 0, "nope"):
            pass
        assert err.value.code == "source_bad_response" and "404" in err.value.message
        entry = add_media(rig.content, "m-1", b"x" * 500_000, duration_s=1.0)
        rig.sim.set_faults(truncate=True)
        with pytest.raises(SourceError) as err, \
                rig.client.open_media(entry["url"], 0, "m-1") as body:
            b"".join(body.chunks)
        assert err.value.code == "source_unreachable"


def test_post_reports_returns_accepted_ids(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        assert rig.client.post_reports([{"id": "a"}, {"id": "b"}, {"no": "id"}]) == {"a", "b"}
        rig.sim.set_faults(reports_status=500)
        with pytest.raises(SourceError) as err:
            rig.client.post_reports([{"id": "c"}])
        assert err.value.code == "source_unreachable"


def test_tls_verification_off_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.source.client"):
        SourceClient(SourceSettings(url="https://h.invalid/api/v1", device_id=DEVICE,
                                    verify_tls=False))
    assert "TLS verification" in caplog.text


def test_settings_from_config_carry_every_source_key(tmp_path: Path) -> None:
    """The daemon's client is built by SourceSettings.from_config: each key of ``source``
    that the tests above vary (timeouts, bounds, the schedule signing key) reaches it."""
    public = raw_public(Ed25519PrivateKey.generate())
    config = tmp_path / "agent.yaml"
    config.write_text(f"""device_id: {DEVICE}
source:
  url: http://127.0.0.1:9/api/v1
  token: t0ken
  read_timeout_s: 2
  max_schedule_bytes: 5000
  request_deadline_s: 7
  media_deadline_s: 9
  public_key: {base64.b64encode(public).decode()}
""")
    settings = SourceSettings.from_config(load_config(config))
    assert (settings.url, settings.device_id, settings.token) == \
        ("http://127.0.0.1:9/api/v1", DEVICE, "t0ken")
    assert (settings.read_timeout_s, settings.max_schedule_bytes, settings.request_deadline_s,
            settings.media_deadline_s) == (2, 5000, 7, 9)
    assert settings.public_key == public and settings.verify_tls is True
