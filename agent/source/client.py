"""HTTP client of the provincial source system (source-api.md).

Every failure becomes a :class:`SourceError` carrying the fault code the contract names,
so the callers (SyncService, MediaCache, ReportUploader) decide what to raise and retry
without knowing HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests
import urllib3.exceptions

from agent.core.faults import FaultError
from agent.core.signing import public_key_from_raw, verify_bytes
from agent.source.bodies import (
    ACCEPT_ENCODING,
    CHUNK,
    BodyBroken,
    BodyTooLarge,
    error_excerpt,
    read_bounded,
)
from agent.source.deadline import Deadline, DeadlineAdapter

if TYPE_CHECKING:
    from agent.config.model import Config

log = logging.getLogger(__name__)

WEB_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
REPORTS_ANSWER_BYTES = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SourceError(FaultError):
    """A failed exchange with the source; ``code`` is a fault code of agent.core.faults."""


@dataclass(frozen=True)
class SourceSettings:
    """The ``source`` section of config.md, plus the device id and timeouts."""

    url: str
    device_id: str
    token: str | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    public_key: bytes | None = None  # raw 32-byte Ed25519 key; set: schedules must be signed
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_schedule_bytes: int = 4 * 1024 * 1024  # counted after content decoding
    request_deadline_s: float = 120.0  # a whole schedule or reports exchange
    media_deadline_s: float = 600.0  # one media request; a cut download resumes later

    @classmethod
    def from_config(cls, cfg: Config) -> SourceSettings:
        src = cfg.source
        return cls(url=src.url, device_id=cfg.device_id, token=src.token,
                   verify_tls=src.verify_tls, ca_file=src.ca_file, client_cert=src.client_cert,
                   client_key=src.client_key, public_key=src.public_key,
                   read_timeout_s=src.read_timeout_s, max_schedule_bytes=src.max_schedule_bytes,
                   request_deadline_s=src.request_deadline_s,
                   media_deadline_s=src.media_deadline_s)


@dataclass(frozen=True)
class ScheduleFetch:
    """The answer to a schedule poll: ``changed`` False means 304 (no body)."""

    changed: bool
    etag: str | None
    body: bytes = b""
    document: Any = None


@dataclass(frozen=True)
class MediaBody:
    """A media response being received: its bytes start at ``start`` of the file
    (0 when the server ignored the Range request)."""

    start: int
    chunks: Iterator[bytes]


def status_code_fault(status: int) -> str:
    """The fault code of an HTTP error status (source-api.md)."""
    if status in (401, 403):
        return "source_auth"
    if status >= 500:
        return "source_unreachable"
    return "source_bad_response"


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an absolute URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


class SourceClient:
    """The bearer token and the client certificate go only to the origin of
    ``source.url`` (source-api.md, Authentication): they are given per request, after
    checking each URL, and redirects are followed here, hop by hop, for the same check."""

    def __init__(self, settings: SourceSettings, session: requests.Session | None = None,
                 on_date: Callable[[str | None], None] | None = None) -> None:
        self.settings = settings
        self._on_date = on_date  # the Date header of every answer of the source (clock trust)
        self._public_key = (None if settings.public_key is None
                            else public_key_from_raw(settings.public_key))
        self._session = session or requests.Session()
        adapter = DeadlineAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._origin = origin(settings.url)
        self._auth = {} if not settings.token else {"Authorization": f"Bearer {settings.token}"}
        # Given per request: a session-level value loses to REQUESTS_CA_BUNDLE in requests.
        self._verify: bool | str = True
        if not settings.verify_tls:
            log.warning("TLS verification of the source system is OFF (source.verify_tls: "
                        "false): anyone on the path can feed this device a schedule")
            self._verify = False
        elif settings.ca_file:
            self._verify = str(settings.ca_file)
        self._cert: str | tuple[str, str] | None = None
        if settings.client_cert:
            self._cert = ((str(settings.client_cert), str(settings.client_key))
                          if settings.client_key else str(settings.client_cert))
        self._timeout = (settings.connect_timeout_s, settings.read_timeout_s)
        self._base = settings.url.rstrip("/")
        self._device = quote(settings.device_id, safe="")

    def close(self) -> None:
        self._session.close()

    def resolve(self, url: str) -> str:
        """A media URL resolved against ``source.url`` by RFC 3986."""
        return urljoin(self.settings.url, url)

    # --- schedule --------------------------------------------------------------------
    def fetch_schedule(self, etag: str | None) -> ScheduleFetch:
        headers = {"Accept-Encoding": ACCEPT_ENCODING}
        if etag is not None:
            headers["If-None-Match"] = etag
        url = f"{self._base}/devices/{self._device}/schedule"
        with self._exchange("schedule", self.settings.request_deadline_s) as deadline:
            response = self._request("GET", url, what="schedule", headers=headers)
            with response:
                if response.status_code == 304:
                    return ScheduleFetch(changed=False,
                                         etag=response.headers.get("ETag", etag))
                if response.status_code == 404:
                    raise SourceError("source_unknown_device", "the source does not know "
                                      f"device {self.settings.device_id!r} (HTTP 404 from {url})")
                self._expect_ok(response, "schedule")
                body = self._read(response, self.settings.max_schedule_bytes, deadline,
                                  "schedule", too_large="schedule_too_large")
                new_etag = response.headers.get("ETag")
                signature = response.headers.get("X-Signature")
        self._verify_signature(body, signature)
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise SourceError("source_bad_response",
                              f"schedule body is not JSON ({len(body)} bytes): {exc}") from exc
        return ScheduleFetch(changed=True, etag=new_etag, body=body, document=document)

    def _verify_signature(self, body: bytes, header: str | None) -> None:
        if self._public_key is None:
            return
        if header is None:
            raise SourceError("schedule_signature",
                              "schedule has no X-Signature header; source.public_key is set")
        if not verify_bytes(body, header, self._public_key):
            raise SourceError("schedule_signature",
                              "schedule X-Signature does not match source.public_key")

    # --- media -----------------------------------------------------------------------
    @contextmanager
    def open_media(self, url: str, offset: int, media_id: str) -> Iterator[MediaBody]:
        """Stream a media file from byte ``offset`` (``Range: bytes=N-`` when > 0)."""
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        what = f"media {media_id}"
        with self._exchange(what, self.settings.media_deadline_s) as deadline:
            response = self._request("GET", self.resolve(url), what=what, headers=headers)
            with response:
                if response.status_code == 206 and offset > 0:
                    start = _content_range_start(response.headers.get("Content-Range"))
                    if start != offset:
                        raise SourceError("source_bad_response",
                                          f"{what}: asked for bytes {offset}-, got Content-Range "
                                          f"{response.headers.get('Content-Range')}")
                else:
                    if response.status_code != 206:
                        self._expect_ok(response, what)
                    start = 0
                yield MediaBody(start, self._chunks(response, what, deadline))

    def _chunks(self, response: requests.Response, what: str,
                deadline: Deadline) -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise SourceError("source_unreachable",
                              f"{what}: transfer cut: {self._why(exc, deadline)}") from exc

    # --- reports ---------------------------------------------------------------------
    def post_reports(self, reports: list[dict[str, Any]]) -> set[str]:
        """POST a batch; the ids the server accepted."""
        url = f"{self._base}/devices/{self._device}/reports"
        with self._exchange("reports", self.settings.request_deadline_s) as deadline:
            response = self._request("POST", url, what="reports", json={"reports": reports})
            with response:
                self._expect_ok(response, "reports")
                body = self._read(response, REPORTS_ANSWER_BYTES, deadline, "reports")
        try:
            accepted = json.loads(body)["accepted"]
            if not isinstance(accepted, list):
                raise TypeError("accepted is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError("source_bad_response",
                              f"reports answer is not {{\"accepted\": [ids]}}: {exc}") from exc
        return {str(i) for i in accepted}

    # --- recordings ------------------------------------------------------------------
    def put_recording(self, first: str, last: str, body: bytes,
                      headers: Mapping[str, str]) -> None:
        """PUT the off-air recording of [first, last) with its ``headers`` (Content-Type,
        X-Recording-Start); returns once the source answered 201."""
        url = (f"{self._base}/devices/{self._device}/recordings?"
               + urlencode({"from": first, "to": last}))
        with self._exchange("recording", self.settings.media_deadline_s), \
                self._request("PUT", url, what="recording", data=body,
                              headers=dict(headers)) as response:
            if response.status_code != 201:
                raise SourceError(status_code_fault(response.status_code),
                                  f"recording: HTTP {response.status_code} from {response.url}: "
                                  f"{error_excerpt(response)}")

    # --- plumbing --------------------------------------------------------------------
    @contextmanager
    def _exchange(self, what: str, seconds: float) -> Iterator[Deadline]:
        """The overall deadline of one exchange (request, redirects and body)."""
        with Deadline(seconds) as deadline:
            try:
                yield deadline
            except requests.RequestException as exc:
                raise SourceError("source_unreachable",
                                  f"{what}: {self._why(exc, deadline)}") from exc

    @staticmethod
    def _why(exc: Exception, deadline: Deadline) -> str:
        if deadline.expired:
            return f"no complete answer within the deadline of {deadline.seconds:g} s"
        return str(exc)

    def _request(self, method: str, url: str, what: str, headers: dict[str, str] | None = None,
                 json: Any = None, data: bytes | None = None) -> requests.Response:
        """Send with the credentials only where they belong; follow redirects by hand."""
        for _ in range(MAX_REDIRECTS + 1):
            if urlsplit(url).scheme.lower() not in WEB_SCHEMES:
                raise SourceError("source_bad_response",
                                  f"{what}: refusing {url!r}: only http and https are fetched")
            own = origin(url) == self._origin
            response = self._session.request(
                method, url, headers={**(headers or {}), **(self._auth if own else {})}, json=json,
                data=data, cert=self._cert if own else None,
                verify=self._verify if own or self._verify is False else True,
                timeout=self._timeout, stream=True, allow_redirects=False)
            if own and self._on_date is not None:
                self._on_date(response.headers.get("Date"))
            if not response.is_redirect:
                return response
            url = urljoin(url, response.headers["Location"])
            response.close()
            if response.status_code == 303 or (response.status_code in (301, 302)
                                                and method in ("POST", "PUT")):
                method, json, data = "GET", None, None
        raise SourceError("source_bad_response", f"{what}: more than {MAX_REDIRECTS} redirects")

    def _read(self, response: requests.Response, limit: int, deadline: Deadline, what: str,
              too_large: str = "source_bad_response") -> bytes:
        try:
            return read_bounded(response, limit)
        except BodyTooLarge as exc:
            raise SourceError(too_large, f"{what}: refused: {exc}") from exc
        except BodyBroken as exc:
            code = "source_unreachable" if exc.transfer else "source_bad_response"
            raise SourceError(code, f"{what}: {self._why(exc, deadline)}") from exc

    @staticmethod
    def _expect_ok(response: requests.Response, what: str) -> None:
        if response.status_code == 200:
            return
        raise SourceError(status_code_fault(response.status_code),
                          f"{what}: HTTP {response.status_code} from {response.url}: "
                          f"{error_excerpt(response)}")


def _content_range_start(header: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes N-M/T``; None when absent or malformed."""
    if header is None or not header.startswith("bytes "):
        return None
    first, _, _ = header[len("bytes "):].partition("-")
    return int(first) if first.isdigit() else None
