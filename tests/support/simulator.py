"""The provincial source system simulator (``python -m tests.support.simulator``).

Serves a content directory over real HTTP, as the source API (source-api.md) does:
``<dir>/schedule.json`` at ``GET {base}/devices/{device_id}/schedule`` (ETag, 304,
optional Ed25519 ``X-Signature``) and ``<dir>/media/<media_id>`` at ``GET {base}/media/{id}``
(``Range: bytes=N-``), and it stores what the agent POSTs to ``{base}/devices/{id}/reports``
and PUTs to ``{base}/devices/{id}/recordings`` (listed, with each body's sha256, at
``GET /_sim/recordings``).
The schedule file is read on every request, so editing it takes effect at once.

Faults are switched at start or at run time (``POST /_sim/faults`` with a JSON object of
:class:`SimFaults` fields); ``GET /_sim/reports`` and ``GET /_sim/stats`` show what the
agent sent and fetched. The ``/_sim/`` endpoints take no token: the simulator is a test
and demo tool, never a production server.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import re
import ssl
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.signing import load_private_key, public_key_b64, public_key_of, sign_bytes
from tests.support.hostile import gzip_bomb, send_chunked, trickle

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_MEDIA_ID = re.compile(r"[A-Za-z0-9._~-]+$")
_CHUNK = 64 * 1024


@dataclass
class SimFaults:
    """Misbehaviours of the simulated source; all off by default."""

    schedule_status: int | None = None  # answer schedule requests with this HTTP status
    media_status: int | None = None  # answer media requests with this HTTP status
    reports_status: int | None = None  # answer report uploads with this HTTP status
    recordings_status: int | None = None  # answer recording uploads with this HTTP status
    slow_s: float = 0.0  # wait this long before answering any API request
    truncate: bool = False  # cut media connections after half of the body
    wrong_hash: bool = False  # flip one byte of every media body
    ignore_range: bool = False  # answer Range requests with 200 and the whole file
    garbage_json: bool = False  # serve a schedule body that is not JSON
    sign: bool = True  # add X-Signature (when a signing key is configured)
    gzip_bomb_bytes: int = 0  # serve the schedule as gzip of this many zero bytes
    trickle_s: float = 0.0  # send the schedule body one byte every trickle_s seconds
    media_redirect: str | None = None  # answer media requests with 302 to this + media id


@dataclass
class _Stats:
    requests: Counter[str] = dataclasses.field(default_factory=Counter)
    media_bytes: Counter[str] = dataclasses.field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "media_bytes": dict(self.media_bytes)}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when the agent hung up mid-answer (it was stopped, or refused a body
        part-way, as the tests mean it to); the traceback otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SourceSimulator:
    def __init__(self, directory: Path, device_id: str, token: str | None,
                 host: str = "127.0.0.1", port: int = 0, base_path: str = "/api/v1",
                 signing_key: Ed25519PrivateKey | None = None,
                 faults: SimFaults | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.directory = Path(directory)
        self.device_id = device_id
        self.token = token
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.signing_key = signing_key
        self._faults = faults or SimFaults()
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}
        self._recordings: list[dict[str, Any]] = []
        self._stats = _Stats()
        self._stopping = threading.Event()
        self._server = _Server((host, port), _make_handler(self))
        self._scheme = "http"
        if tls_context is not None:
            self._server.socket = tls_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{self.base_path}"

    @property
    def root_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> SourceSimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="source-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the console script)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> SourceSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ---------------------------------------------------------------------
    def set_faults(self, **switches: Any) -> SimFaults:
        """Change some fault switches (unknown names raise TypeError); returns them all."""
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **switches)
            return self._faults

    def faults(self) -> SimFaults:
        with self._lock:
            return self._faults

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._reports.values())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.as_dict()

    # --- used by the handler -------------------------------------------------------------
    def count(self, kind: str) -> None:
        with self._lock:
            self._stats.requests[kind] += 1

    def add_media_bytes(self, media_id: str, n: int) -> None:
        with self._lock:
            self._stats.media_bytes[media_id] += n

    def store_reports(self, reports: list[Any]) -> list[str]:
        accepted: list[str] = []
        with self._lock:
            for report in reports:
                if isinstance(report, dict) and isinstance(report.get("id"), str):
                    self._reports.setdefault(report["id"], report)
                    accepted.append(report["id"])
        return accepted

    def recordings(self) -> list[dict[str, Any]]:
        """What the agent PUT to /recordings: query, headers, size and sha256 of each."""
        with self._lock:
            return list(self._recordings)

    def store_recording(self, meta: dict[str, Any], body: bytes) -> None:
        with self._lock:
            self._recordings.append({**meta, "bytes": len(body),
                                     "sha256": hashlib.sha256(body).hexdigest()})

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    @property
    def stopping(self) -> threading.Event:
        return self._stopping


def _make_handler(sim: SourceSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(_SimHandler):
        simulator = sim

    return Handler


class _SimHandler(BaseHTTPRequestHandler):
    simulator: SourceSimulator
    protocol_version = "HTTP/1.1"
    server_version = "broadcast-source-sim"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read /_sim/stats instead of an access log."""

    # --- dispatch --------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self.headers.get("Authorization") is not None:
            self.simulator.count("with_authorization")
        if path == "/_sim/reports":
            self._send_json(HTTPStatus.OK, self.simulator.reports())
            return
        if path == "/_sim/stats":
            self._send_json(HTTPStatus.OK, self.simulator.stats())
            return
        if path == "/_sim/recordings":
            self._send_json(HTTPStatus.OK, self.simulator.recordings())
            return
        route = self._authorized_route(path)
        if route is None:
            return
        kind, arg = route
        if kind == "schedule":
            self._schedule(arg)
        elif kind == "media":
            self._media(arg)
        else:
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")

    def _authorized_route(self, path: str) -> tuple[str, str] | None:
        """The API route of ``path`` once the token is checked (answering otherwise),
        after the configured slowness."""
        route = self._api_route(path)
        if route is None or not self._authorized():
            return None
        self.simulator.pause(self.simulator.faults().slow_s)
        return route

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if path == "/_sim/faults":
            self._post_faults(body)
            return
        route = self._authorized_route(path)
        if route is None:
            return
        kind, arg = route
        if kind == "reports":
            self._post_reports(arg, body)
        else:
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET")

    def do_PUT(self) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        route = self._authorized_route(parts.path)
        if route is None:
            return
        kind, device_id = route
        if kind != "recordings":
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "PUT only to recordings")
            return
        sim = self.simulator
        if self._refused("recordings", device_id, sim.faults().recordings_status):
            return
        query = dict(parse_qsl(parts.query))
        start = self.headers.get("X-Recording-Start")
        if not {"from", "to"} <= query.keys() or start is None or not body:
            self._send_error(HTTPStatus.BAD_REQUEST, "from, to, X-Recording-Start and a body "
                             "are required")
            return
        sim.store_recording({"from": query["from"], "to": query["to"], "start": start,
                             "segments": self.headers.get("X-Recording-Segments"),
                             "content_type": self.headers.get("Content-Type")}, body)
        self._send_json(HTTPStatus.CREATED, {"stored": True})

    def _api_route(self, path: str) -> tuple[str, str] | None:
        base = self.simulator.base_path
        parts = path[len(base):].split("/") if path.startswith(base + "/") else []
        if len(parts) == 3 and parts[1] == "media":
            return "media", unquote(parts[2])
        endpoints = ("schedule", "reports", "recordings")
        if len(parts) == 4 and parts[1] == "devices" and parts[3] in endpoints:
            return parts[3], unquote(parts[2])
        self._send_error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        return None

    def _authorized(self) -> bool:
        token = self.simulator.token
        if token is None:
            return True
        given = self.headers.get("Authorization")
        if given is None:
            self._send_error(HTTPStatus.UNAUTHORIZED, "missing bearer token")
            return False
        if given != f"Bearer {token}":
            self._send_error(HTTPStatus.FORBIDDEN, "wrong bearer token")
            return False
        return True

    # --- endpoints -------------------------------------------------------------------
    def _schedule(self, device_id: str) -> None:
        sim = self.simulator
        faults = sim.faults()
        sim.count("schedule")
        if faults.schedule_status is not None:
            self._send_error(faults.schedule_status, "simulated failure")
            return
        schedule_file = sim.directory / "schedule.json"
        if device_id != sim.device_id or not schedule_file.is_file():
            self._send_error(HTTPStatus.NOT_FOUND, f"no schedule for device {device_id}")
            return
        body = b"{ this is not json" if faults.garbage_json else schedule_file.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            sim.count("schedule_304")
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {"ETag": etag, "Content-Type": "application/json"}
        if sim.signing_key is not None and faults.sign:
            headers["X-Signature"] = sign_bytes(body, sim.signing_key)
        sim.count("schedule_200")
        if faults.gzip_bomb_bytes:
            send_chunked(self, {**headers, "Content-Encoding": "gzip"},
                         gzip_bomb(faults.gzip_bomb_bytes))
        elif faults.trickle_s:
            send_chunked(self, headers, trickle(body, faults.trickle_s, sim.stopping.wait))
        else:
            self._send_bytes(HTTPStatus.OK, body, headers)

    def _media(self, media_id: str) -> None:
        sim = self.simulator
        faults = sim.faults()
        sim.count("media")
        if faults.media_status is not None:
            self._send_error(faults.media_status, "simulated failure")
            return
        if faults.media_redirect is not None:
            self._send_bytes(HTTPStatus.FOUND, b"",
                             {"Location": faults.media_redirect + media_id})
            return
        media_file = sim.directory / "media" / media_id
        if not _MEDIA_ID.match(media_id) or not media_file.is_file():
            self._send_error(HTTPStatus.NOT_FOUND, f"no media {media_id}")
            return
        size = media_file.stat().st_size
        start, end = 0, size
        status = HTTPStatus.OK
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        requested = self.headers.get("Range")
        if requested is not None and not faults.ignore_range:
            match = _RANGE.match(requested.strip())
            if match is None or int(match.group(1)) >= size:
                self._send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                 f"bad range {requested}", {"Content-Range": f"bytes */{size}"})
                return
            start = int(match.group(1))
            if match.group(2):
                end = min(end, int(match.group(2)) + 1)
            status = HTTPStatus.PARTIAL_CONTENT
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        # Read as sent, a chunk at a time, as a file server would: never the whole file
        # in one system call (tests/e2e/test_load.py measures the agent's audio beside it).
        sent_limit = start + max(1, (end - start) // 2) if faults.truncate else end
        with open(media_file, "rb") as body:
            body.seek(start)
            for offset in range(start, sent_limit, _CHUNK):
                chunk = body.read(min(_CHUNK, sent_limit - offset))
                if faults.wrong_hash and offset == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                self.wfile.write(chunk)
                sim.add_media_bytes(media_id, len(chunk))
        if faults.truncate:
            self.close_connection = True

    def _refused(self, kind: str, device_id: str, simulated_status: int | None) -> bool:
        """Count an upload of ``kind``; answer and return True when it fails (a simulated
        failure status, an unknown device)."""
        self.simulator.count(kind)
        if simulated_status is not None:
            self._send_error(simulated_status, "simulated failure")
            return True
        if device_id != self.simulator.device_id:
            self._send_error(HTTPStatus.NOT_FOUND, f"unknown device {device_id}")
            return True
        return False

    def _post_reports(self, device_id: str, body: bytes) -> None:
        sim = self.simulator
        if self._refused("reports", device_id, sim.faults().reports_status):
            return
        try:
            reports = json.loads(body)["reports"]
            if not isinstance(reports, list):
                raise TypeError("reports is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._send_error(HTTPStatus.BAD_REQUEST, f"bad reports body: {exc}")
            return
        self._send_json(HTTPStatus.OK, {"accepted": sim.store_reports(reports)})

    def _post_faults(self, body: bytes) -> None:
        try:
            switches = json.loads(body)
            if not isinstance(switches, dict):
                raise TypeError("expected a JSON object")
            faults = self.simulator.set_faults(**switches)
        except (ValueError, TypeError) as exc:
            self._send_error(HTTPStatus.BAD_REQUEST, f"bad fault switches: {exc}")
            return
        self._send_json(HTTPStatus.OK, dataclasses.asdict(faults))

    # --- plumbing --------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: object) -> None:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        self._send_bytes(status, body, {"Content-Type": "application/json"})

    def _send_error(self, status: int, message: str,
                    headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode("utf-8")
        self._send_bytes(status, body, {"Content-Type": "application/json", **(headers or {})})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.simulator",
                                     description="Simulated provincial source system.")
    parser.add_argument("--dir", type=Path, required=True,
                        help="content directory: schedule.json and media/<id>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--token", default=None, help="bearer token to demand (none: open)")
    parser.add_argument("--base-path", default="/api/v1")
    parser.add_argument("--signing-key-file", type=Path, default=None,
                        help="PEM Ed25519 private key to sign schedules with")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a directory")
    try:
        key = None if args.signing_key_file is None else load_private_key(args.signing_key_file)
    except (OSError, ValueError) as exc:
        parser.error(f"--signing-key-file: {exc}")
    sim = SourceSimulator(args.dir, args.device_id, args.token, args.host, args.port,
                          args.base_path, key)
    print(sim.url, flush=True)
    if key is not None:
        print(f"public_key: {public_key_b64(public_key_of(key))}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
