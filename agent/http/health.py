"""The health endpoint (health-http.md): /healthz, /status, /metrics, /recordings.

A small asyncio server in one thread rather than ``http.server``: the standard library
server gives every connection a thread and only a per-recv timeout, so a client sending
one byte a second holds its thread forever. Here every connection has one deadline for the
whole exchange, requests are GET-only with at most 8 KiB of headers and no body, and when
``max_connections`` are open the connection that has been sending its request the longest
is cut off to make room, so slow clients cannot keep others from ``/healthz``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from agent.core.faults import FaultRegistry
from agent.http.metrics import CONTENT_TYPE, AgentMetrics
from agent.recording.span import BadSpan, Recording, parse_span
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
# A large answer (a recording, up to ~9 MB) gets this much more time per byte to leave.
MIN_SEND_BYTES_PER_S = 32 * 1024
_JSON = "application/json"


class _Reply(Exception):
    def __init__(self, status: HTTPStatus, body: bytes, content_type: str = _JSON,
                 extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra = extra


def _json_reply(status: HTTPStatus, doc: Any) -> _Reply:
    return _Reply(status, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def _error(status: HTTPStatus, **extra: str) -> _Reply:
    return _Reply(status, json.dumps({"error": status.phrase}).encode(),
                  extra=tuple(extra.items()))


class HealthServer:
    def __init__(self, host: str, port: int, token: str | None, max_connections: int,
                 request_timeout_s: float, status_provider: Callable[[], dict[str, Any]],
                 faults: FaultRegistry, metrics: AgentMetrics,
                 refresh_metrics: Callable[[], None] | None = None,
                 recordings: Callable[[float, float], Recording | None] | None = None) -> None:
        self._host = host
        self._port = port
        self._expected_auth = None if token is None else f"Bearer {token}".encode()
        self._max_connections = max_connections
        self._timeout = request_timeout_s
        self._status_provider = status_provider
        self._faults = faults
        self._metrics = metrics
        self._refresh_metrics = refresh_metrics  # brings gauges up to date before a scrape
        self._recordings = recordings  # None: off-air recording is off
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        # Building /status and /metrics may wait on other components' locks: off the loop.
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-worker")
        self._reading: dict[asyncio.Task[None], float] = {}  # connection -> accepted at
        self._open: set[asyncio.Task[None]] = set()
        self.port = port

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve; raises OSError here when the address cannot be bound."""
        ready: list[BaseException | None] = []
        bound = threading.Event()
        self._thread = NamedThread(target=self._run, args=(ready, bound), name="health",
                                   daemon=True)
        self._thread.start()
        bound.wait()
        if ready and ready[0] is not None:
            self._thread.join()
            raise ready[0]

    def stop(self, timeout: float = 5.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _run(self, ready: list[BaseException | None], bound: threading.Event) -> None:
        asyncio.run(self._serve(ready, bound))

    async def _serve(self, ready: list[BaseException | None], bound: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            server = await asyncio.start_server(self._on_connection, self._host, self._port,
                                                limit=MAX_HEADER_BYTES)
        except OSError as exc:
            ready.append(exc)
            bound.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.append(None)
        bound.set()
        log.info("health endpoint on %s:%d", self._host, self.port)
        async with server:
            await self._stopped.wait()
            server.close()
            for task in list(self._open):
                task.cancel()
            await asyncio.gather(*self._open, return_exceptions=True)

    # --- connections ----------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._open) >= self._max_connections and not self._evict_slowest_reader():
            writer.write(_response(_error(HTTPStatus.SERVICE_UNAVAILABLE)))
            writer.close()
            return
        self._open.add(task)
        accepted_at = asyncio.get_running_loop().time()
        self._reading[task] = accepted_at
        answered = False
        try:
            async with asyncio.timeout_at(accepted_at + self._timeout):
                reply = await self._answer(reader, task)
            writer.write(_response(reply))
            async with asyncio.timeout_at(accepted_at + self._timeout
                                          + len(reply.body) / MIN_SEND_BYTES_PER_S):
                await writer.drain()
            answered = True
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            # Cancelled: evicted for a newer connection, or the server stops. Ending the
            # task normally keeps asyncio from logging a traceback per evicted client.
            pass
        finally:
            self._open.discard(task)
            self._reading.pop(task, None)
            if answered:
                writer.close()
            else:  # timed out, evicted or reset: drop without flushing
                writer.transport.abort()

    def _evict_slowest_reader(self) -> bool:
        if not self._reading:
            return False
        oldest = min(self._reading, key=self._reading.__getitem__)
        del self._reading[oldest]
        oldest.cancel()
        self._open.discard(oldest)
        return True

    async def _answer(self, reader: asyncio.StreamReader, task: asyncio.Task[None]) -> _Reply:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError from exc
        self._reading.pop(task, None)
        try:
            return await self._route(head)
        except _Reply as reply:
            return reply
        except Exception as exc:  # one line, never a traceback per hostile request
            log.warning("health endpoint failed to answer %r: %s: %s", head[:100],
                        type(exc).__name__, exc)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR)

    async def _route(self, head: bytes) -> _Reply:
        method, target, headers = parse_request(head)
        self._authorize(headers.get("authorization"))
        if method != "GET":
            raise _error(HTTPStatus.METHOD_NOT_ALLOWED, Allow="GET")
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            raise _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return self._healthz()
        loop = asyncio.get_running_loop()
        if path == "/status":
            status = await loop.run_in_executor(self._workers, self._status_provider)
            return _json_reply(HTTPStatus.OK, status)
        if path == "/metrics":
            body = await loop.run_in_executor(self._workers, self._render_metrics)
            return _Reply(HTTPStatus.OK, body, CONTENT_TYPE)
        if path == "/recordings" and self._recordings is not None:
            first, last = _span_of(target)
            recording = await loop.run_in_executor(self._workers, self._recordings, first, last)
            if recording is None:
                raise _error(HTTPStatus.NOT_FOUND)
            headers = recording.headers()
            content_type = headers.pop("Content-Type")
            return _Reply(HTTPStatus.OK, recording.body, content_type,
                          extra=tuple(headers.items()))
        raise _error(HTTPStatus.NOT_FOUND)

    def _render_metrics(self) -> bytes:
        if self._refresh_metrics is not None:
            self._refresh_metrics()
        return self._metrics.render()

    def _authorize(self, header: str | None) -> None:
        if self._expected_auth is None:
            return
        given = (header or "").encode("latin-1")
        if not hmac.compare_digest(given, self._expected_auth):
            raise _error(HTTPStatus.UNAUTHORIZED, **{"WWW-Authenticate": "Bearer"})

    def _healthz(self) -> _Reply:
        active = self._faults.active()
        if not any(f.severity == "error" for f in active):
            return _json_reply(HTTPStatus.OK, {"status": "ok"})
        faults = [{"code": f.code, "severity": f.severity, "message": f.message,
                   "since": datetime.fromtimestamp(f.since, UTC).isoformat()} for f in active]
        return _json_reply(HTTPStatus.SERVICE_UNAVAILABLE,
                           {"status": "degraded", "faults": faults})


def _span_of(target: str) -> tuple[float, float]:
    """``from`` and ``to`` of the query. A ``+`` is kept as a plus (not a space), so an
    offset typed unencoded (``...T06:00:00+07:00``) still reads."""
    query: dict[str, str] = {}
    for pair in target.partition("?")[2].split("&"):
        name, _, value = pair.partition("=")
        query[unquote(name)] = unquote(value)
    try:
        return parse_span(query.get("from"), query.get("to"))
    except BadSpan as exc:
        raise _Reply(HTTPStatus.BAD_REQUEST,
                     json.dumps({"error": "Bad Request", "message": str(exc)}).encode()) from exc


def parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, target, lower-cased headers) of a request head ending in CRLF CRLF;
    raises the 400 reply when it is not an HTTP/1.x request."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _error(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise _error(HTTPStatus.BAD_REQUEST)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _response(reply: _Reply) -> bytes:
    head = [f"HTTP/1.1 {reply.status.value} {reply.status.phrase}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in reply.extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
