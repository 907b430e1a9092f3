"""The span of a recording request (health-http.md GET /recordings, mqtt.md
upload_recording): two RFC 3339 times with an offset, at most one hour apart.

Kept free of the encoder so that command validation can use it without loading libsndfile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX_SPAN_S = 3600.0


@dataclass(frozen=True)
class Recording:
    """A span as served and uploaded: the closed segments that overlap it, concatenated
    (a chained Ogg Opus stream, RFC 7845 section 3)."""

    start: float  # Unix time of the first sample of ``body``
    body: bytes
    segments: tuple[str, ...]  # the segments' file names, which place each link in time
    content_type: str = "audio/ogg"

    def headers(self) -> dict[str, str]:
        """Content-Type, X-Recording-Start and X-Recording-Segments, as sent with the body."""
        return {"Content-Type": self.content_type,
                "X-Recording-Start": exact_stamp(self.start),
                "X-Recording-Segments": ", ".join(self.segments)}


class BadSpan(ValueError):
    """The span is malformed or too long; the message says why."""


def parse_time(name: str, value: object) -> float:
    """Unix seconds of an RFC 3339 time that carries its UTC offset."""
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadSpan(f"{name} must be an RFC 3339 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise BadSpan(f"{name} must carry a UTC offset, got {value!r}")
    return moment.timestamp()


def parse_span(start: object, end: object) -> tuple[float, float]:
    """(from, to) in Unix seconds; ``to`` after ``from`` and at most an hour later."""
    first, last = parse_time("from", start), parse_time("to", end)
    if last <= first:
        raise BadSpan("to must be after from")
    if last - first > MAX_SPAN_S:
        raise BadSpan(f"the span is {last - first:g} s; at most {MAX_SPAN_S:g} s")
    return first, last


def exact_stamp(epoch: float) -> str:
    """RFC 3339 in UTC to the microsecond: the time of a recording's first sample."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")
