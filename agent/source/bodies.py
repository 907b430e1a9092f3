"""Response bodies read to a bound counted after content decoding.

The decoding is done here, incrementally with ``max_length``, rather than by urllib3: a
compression bomb (2 GB of zeros are 2 MB of gzip) is cut off as soon as the decoded
bytes pass the bound, and memory never holds more than the bound and one network chunk.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import requests
import urllib3.exceptions

CHUNK = 64 * 1024
ERROR_BODY_BYTES = 1024  # what an error answer may show of its body in a message
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The decoded body passed its bound; reading stopped there."""


class BodyBroken(Exception):
    """The body could not be received (``transfer``) or decoded."""

    def __init__(self, message: str, transfer: bool = False) -> None:
        super().__init__(message)
        self.transfer = transfer


class _Decoder(Protocol):
    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...
    @property
    def unconsumed_tail(self) -> bytes: ...
    def flush(self, length: int = ...) -> bytes: ...


class _Identity:
    """Passes bytes through with the decoder interface of zlib."""

    def __init__(self) -> None:
        self.unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if max_length <= 0:
            self.unconsumed_tail = b""
            return data
        self.unconsumed_tail = data[max_length:]
        return data[:max_length]

    def flush(self, length: int = 0) -> bytes:
        return b""


def _decoder(encoding: str | None) -> _Decoder:
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return _Identity()
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj()
    raise BodyBroken(f"unsupported Content-Encoding {encoding!r}")


def read_bounded(response: requests.Response, limit: int, truncate: bool = False) -> bytes:
    """The decoded body of a ``stream=True`` response; past ``limit`` bytes, BodyTooLarge
    (or, with ``truncate``, the first ``limit`` bytes)."""
    decoder = _decoder(response.headers.get("Content-Encoding"))
    declared = response.headers.get("Content-Length", "")
    if not truncate and isinstance(decoder, _Identity) and declared.isdigit() \
            and int(declared) > limit:
        raise BodyTooLarge(f"Content-Length {declared} is over {limit} bytes")
    out = bytearray()
    try:
        for raw in response.raw.stream(CHUNK, decode_content=False):
            pending = raw
            while pending:
                out += decoder.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    return _over(out, limit, truncate)
                pending = decoder.unconsumed_tail
        out += decoder.flush(limit + 1 - len(out))
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        raise BodyBroken(f"transfer cut: {exc}", transfer=True) from exc
    except zlib.error as exc:
        raise BodyBroken(f"cannot decode the body: {exc}") from exc
    return _over(out, limit, truncate) if len(out) > limit else bytes(out)


def _over(out: bytearray, limit: int, truncate: bool) -> bytes:
    if truncate:
        return bytes(out[:limit])
    raise BodyTooLarge(f"the decoded body passed {limit} bytes")


def error_excerpt(response: requests.Response) -> str:
    """The start of an error answer's body (at most ERROR_BODY_BYTES are read), for a
    log line or a fault message."""
    try:
        body = read_bounded(response, ERROR_BODY_BYTES, truncate=True)
    except BodyBroken as exc:
        return f"({exc})"
    return body[:200].decode("utf-8", errors="replace")
