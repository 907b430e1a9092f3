import argparse
import base64
import json
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import signing


def test_canonical_json_is_the_contract_form() -> None:
    obj = {"b": 1, "a": {"z": None, "y": [True, "Loa phường"]}}
    assert signing.canonical_json(obj) == \
        '{"a":{"y":[true,"Loa phường"],"z":null},"b":1}'.encode()


def test_sign_then_verify_ignores_the_signature_field_and_key_order() -> None:
    key = Ed25519PrivateKey.generate()
    command = {"id": "c-1", "type": "sync_now", "args": {}}
    command["signature"] = signing.sign(command, key)
    reordered = dict(reversed(list(command.items())))
    assert signing.verify(reordered, signing.public_key_of(key))


@pytest.mark.parametrize("tamper", [
    lambda c: c.update(type="stop"),
    lambda c: c.update(signature="ed25519:" + base64.b64encode(b"x" * 64).decode()),
    lambda c: c.update(signature="ed25519:not base64!"),
    lambda c: c.update(signature="rsa:AAAA"),
    lambda c: c.update(signature=None),
    lambda c: c.pop("signature"),
    lambda c: c.update(extra=float("nan")),
])
def test_verify_rejects_tampered_or_malformed(
        tamper: Callable[[dict[str, object]], object]) -> None:
    key = Ed25519PrivateKey.generate()
    command: dict[str, object] = {"id": "c-1", "type": "sync_now", "args": {}}
    command["signature"] = signing.sign(command, key)
    tamper(command)
    assert not signing.verify(command, signing.public_key_of(key))


def test_verify_bytes_for_schedule_bodies() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"version": 17}'
    header = signing.sign_bytes(body, key)
    assert signing.verify_bytes(body, header, signing.public_key_of(key))
    assert not signing.verify_bytes(body + b" ", header, signing.public_key_of(key))
    assert not signing.verify_bytes(body, None, signing.public_key_of(key))
    other = signing.public_key_of(Ed25519PrivateKey.generate())
    assert not signing.verify_bytes(body, header, other)


def test_load_public_key_round_trip_and_clear_errors() -> None:
    key = signing.public_key_of(Ed25519PrivateKey.generate())
    b64 = signing.public_key_b64(key)
    assert signing.public_key_b64(signing.load_public_key(b64)) == b64
    with pytest.raises(ValueError, match="base64"):
        signing.load_public_key("not*base64")
    with pytest.raises(ValueError, match="32 raw bytes"):
        signing.load_public_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        signing.load_public_key(b64.rstrip("="))  # padding is required


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    code = ("import argparse, sys; from agent.core import signing; "
            "p = argparse.ArgumentParser(); signing.register(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=30)


def test_keygen_and_sign_command_produce_a_verifiable_command(tmp_path: Path) -> None:
    done = _cli("keygen", "--out", str(tmp_path / "central"))
    assert done.returncode == 0, done.stderr
    public_b64 = done.stdout.strip()
    key_file = tmp_path / "central.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "central.pub").read_text().strip() == public_b64

    signed = _cli("sign-command", "--key", str(key_file), "--type", "emergency",
                  "--args", '{"text": "Bão số 3 đang vào"}', "--expires-in", "120",
                  "--to", "group:huyen-phu-loc")
    assert signed.returncode == 0, signed.stderr
    command = json.loads(signed.stdout)
    assert command["args"] == {"text": "Bão số 3 đang vào"}
    assert command["to"] == "group:huyen-phu-loc"  # covered by the signature below
    issued = datetime.fromisoformat(command["issued_at"])
    expires = datetime.fromisoformat(command["expires_at"])
    assert (expires - issued).total_seconds() == 120
    assert signing.verify(command, signing.load_public_key(public_b64))


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    assert _cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    again = _cli("keygen", "--out", str(tmp_path / "k"))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr


def test_sign_command_refuses_bad_args(tmp_path: Path) -> None:
    assert _cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    bad = _cli("sign-command", "--key", str(tmp_path / "k.key"), "--type", "set_volume",
               "--args", '{"volume": 101}', "--to", "d1")
    assert bad.returncode == 1
    assert "volume must be an integer 0–100" in bad.stderr


def test_register_adds_both_subcommands() -> None:
    parser = argparse.ArgumentParser()
    signing.register(parser.add_subparsers())
    args = parser.parse_args(["sign-command", "--key", "k", "--type", "sync_now", "--to", "d1"])
    assert args.func is not None and args.expires_in == 300


def test_verifying_never_loads_cryptography() -> None:
    """The agent only verifies: libsodium does it, and cryptography's 7 MB stay out."""
    key = Ed25519PrivateKey.generate()
    command = {"id": "c-1", "type": "sync_now", "args": {}, "to": "dev-1"}
    command["signature"] = signing.sign(command, key)
    probe = ("import json, sys\n"
             "from agent.core import signing\n"
             "key = signing.load_public_key(sys.argv[1])\n"
             "print(signing.verify(json.loads(sys.argv[2]), key),"
             " any(m.startswith('cryptography') for m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", probe,
                          signing.public_key_b64(signing.public_key_of(key)),
                          json.dumps(command)], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["True", "False"]
