"""Canonical JSON and Ed25519 signatures (source-api.md, "Keys and signatures").

Also the developer subcommands ``keygen`` and ``sign-command`` that a central server's
developers use to produce keys and correctly signed commands.

Verification runs on libsodium (PyNaCl): twice as fast as cryptography's OpenSSL binding
(55 against 105 µs a signature here), which is what a flood of badly signed commands costs
(mqtt.md, "Floods"), and 3.6 MB of RSS against 7.4. The agent only verifies, so it never
loads cryptography; the developer subcommands sign with it, where it reads and writes PEM
keys. Both are imported where a key is first used: an agent configured without keys loads
neither, and the command line does not wait for them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from nacl.signing import VerifyKey

SIGNATURE_PREFIX = "ed25519:"
_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that are signed: sorted keys, no spaces, UTF-8 (not \\u escapes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def load_public_key(b64: str) -> VerifyKey:
    """A raw 32-byte Ed25519 public key in standard base64 with padding."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not standard base64 (A-Z a-z 0-9 + /, with = padding)"
                         ) from None
    if len(raw) != _PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {_PUBLIC_KEY_BYTES} raw bytes "
                         f"(44 base64 characters), got {len(raw)} bytes")
    return public_key_from_raw(raw)


def public_key_from_raw(raw: bytes) -> VerifyKey:
    """The key of 32 raw bytes (config values are checked by agent/config/checks.py)."""
    from nacl.signing import VerifyKey

    return VerifyKey(raw)


def public_key_of(private_key: Ed25519PrivateKey) -> VerifyKey:
    """The key that verifies what ``private_key`` signs."""
    from cryptography.hazmat.primitives import serialization

    return public_key_from_raw(private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def public_key_b64(key: VerifyKey) -> str:
    return base64.b64encode(bytes(key)).decode("ascii")


def _unsigned(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "signature"}


def sign_bytes(body: bytes, private_key: Ed25519PrivateKey) -> str:
    return SIGNATURE_PREFIX + base64.b64encode(private_key.sign(body)).decode("ascii")


def sign(obj: Mapping[str, Any], private_key: Ed25519PrivateKey) -> str:
    """``ed25519:<base64>`` over the canonical JSON of ``obj`` without its ``signature``."""
    return sign_bytes(canonical_json(_unsigned(obj)), private_key)


def verify_bytes(body: bytes, signature: str | None, key: VerifyKey) -> bool:
    """True when ``signature`` (``ed25519:<base64>``) is a valid signature of ``body``."""
    from nacl.exceptions import BadSignatureError

    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return False
    try:
        raw = base64.b64decode(signature[len(SIGNATURE_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != _SIGNATURE_BYTES:
        return False
    try:
        key.verify(body, raw)
    except BadSignatureError:
        return False
    return True


def verify(obj: Mapping[str, Any], key: VerifyKey) -> bool:
    """True when ``obj["signature"]`` signs the canonical JSON of the rest of ``obj``."""
    try:
        body = canonical_json(_unsigned(obj))
    except ValueError:  # NaN or infinity cannot be canonical JSON
        return False
    return verify_bytes(body, obj.get("signature"), key)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


# --- developer subcommands -----------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keygen`` and ``sign-command``; each sets ``func(args) -> exit code``."""
    keygen = subparsers.add_parser(
        "keygen", help="create an Ed25519 key pair for signing commands or schedules")
    keygen.add_argument("--out", required=True, type=Path, metavar="PREFIX",
                        help="writes PREFIX.key (PEM private key, mode 0600) and PREFIX.pub")
    keygen.set_defaults(func=_keygen)

    signer = subparsers.add_parser(
        "sign-command", help="print a signed MQTT command, ready to publish")
    signer.add_argument("--key", required=True, type=Path, help="PEM private key (keygen)")
    signer.add_argument("--type", required=True, dest="command_type")
    signer.add_argument("--args", default="{}", dest="command_args",
                        help='the args object as JSON, e.g. \'{"text": "..."}\'')
    signer.add_argument("--to", required=True, metavar="AUDIENCE",
                        help="the device id, or group:<name>: covered by the signature, so "
                             "the command cannot be replayed to another device")
    signer.add_argument("--expires-in", type=int, default=300, metavar="SECONDS")
    signer.add_argument("--id", dest="command_id", default=None,
                        help="command id (default: a fresh UUID)")
    signer.set_defaults(func=_sign_command)


def _keygen(args: argparse.Namespace) -> int:
    key_path = Path(f"{args.out}.key")
    pub_path = Path(f"{args.out}.pub")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {key_path} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = public_key_b64(public_key_of(key))
    pub_path.write_text(public + "\n", encoding="ascii")
    print(public)
    return 0


def _sign_command(args: argparse.Namespace) -> int:
    from agent.mqtt.commands import BadArgs, validate_args  # commands imports this module

    try:
        key = load_private_key(args.key)
        command_args = json.loads(args.command_args)
        validate_args(args.command_type, command_args)
    except (OSError, ValueError) as exc:  # BadArgs and JSONDecodeError are ValueErrors
        kind = "bad args" if isinstance(exc, BadArgs) else "error"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 1
    issued = datetime.now(UTC).astimezone().replace(microsecond=0)
    command: dict[str, Any] = {
        "id": args.command_id or str(uuid.uuid4()),
        "type": args.command_type,
        "args": command_args,
        "to": args.to,
        "issued_at": issued.isoformat(),
        "expires_at": (issued + timedelta(seconds=args.expires_in)).isoformat(),
    }
    command["signature"] = sign(command, key)
    print(json.dumps(command, ensure_ascii=False))
    return 0
