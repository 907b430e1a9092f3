"""Hostile bodies for the source simulator: a streamed gzip bomb and a trickled body."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

_BLOCK = 1024 * 1024


def gzip_bomb(decoded_bytes: int) -> Iterator[bytes]:
    """A gzip stream of ``decoded_bytes`` zero bytes (about 1/1000 of that on the wire),
    made block by block: after a full flush, the same input compresses to the same bytes,
    so one compressed block is repeated instead of compressing gigabytes. The stream ends
    without the gzip trailer: a bounded reader never gets there, and one that does fails."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(_BLOCK)
    yield compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    for _ in range(1, decoded_bytes // _BLOCK):
        yield block


def send_chunked(handler: BaseHTTPRequestHandler, headers: dict[str, str],
                 chunks: Iterator[bytes]) -> None:
    """A 200 answer whose body is ``chunks`` in HTTP/1.1 chunked transfer coding."""
    handler.send_response(HTTPStatus.OK)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        for chunk in chunks:
            if chunk:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.write(b"0\r\n\r\n")
    except OSError:  # the agent hung up, as it should
        handler.close_connection = True


def trickle(body: bytes, interval_s: float, wait: Callable[[float], bool]) -> Iterator[bytes]:
    """``body`` one byte at a time, ``interval_s`` apart; stops early when ``wait`` (an
    Event's wait: True once set) says the server is stopping."""
    for i in range(len(body)):
        if i and wait(interval_s):
            return
        yield body[i:i + 1]
