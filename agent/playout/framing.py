"""Framing of the decoder worker's stdout: 1 byte kind, 4 bytes little-endian length."""

from __future__ import annotations

import struct
from typing import BinaryIO

HEADER = struct.Struct("<cI")
PCM = b"P"
STATE = b"S"
HEARTBEAT = b"H"


def write_frame(out: BinaryIO, kind: bytes, payload: bytes) -> None:
    out.write(HEADER.pack(kind, len(payload)) + payload)
    out.flush()


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """Next (kind, payload), or None at end of stream."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    kind, length = HEADER.unpack(header)
    payload = _read_exact(stream, length) if length else b""
    if payload is None:
        return None
    return kind, payload


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
