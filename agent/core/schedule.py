"""The Schedule document of source-api.md: parsing, validation and program windows.

A document that is unusable as a whole raises ScheduleError; a single invalid program is
skipped and listed in ``ParsedSchedule.problems`` (fault ``schedule_invalid_program``)
while the rest of the schedule is applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.core.text import check_lang, check_speech_text, check_title

# `priority` is Circular 39's priority bulletin ("bản tin ưu tiên"), above the commune's
# ordinary (scheduled) programmes and below live relays and emergencies.
Priority = Literal["scheduled", "priority", "live", "emergency"]
PRIORITY_RANK: dict[str, int] = {"scheduled": 0, "priority": 1, "live": 2, "emergency": 3}
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The commune FM band (QCVN 70:2013/BTTTT, the commune wireless stations a cluster relays)
# and the broadcast band. The RTL-SDR's R820T tuner receives about 24–1766 MHz (docs/fm.md),
# so both are within reach; anything else is refused.
FM_BANDS_MHZ = ((54.0, 68.0), (76.0, 108.0))
FM_BANDS_TEXT = " or ".join(f"{low:g}–{high:g} MHz" for low, high in FM_BANDS_MHZ)
MAX_REPEAT_GAP_S = 3600.0
# An estimate for windows of TTS programs without duration_s (only used to decide whether a
# late program is still worth starting and to order downloads; never to cut audio).
TTS_SECONDS_PER_CHAR = 0.08

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class ScheduleError(ValueError):
    """The document as a whole cannot be used."""


@dataclass(frozen=True)
class MediaEntry:
    id: str
    url: str
    sha256: str
    size: int
    duration_s: float | None = None
    title: str = ""
    mime: str = ""


@dataclass(frozen=True)
class MediaSource:
    items: tuple[str, ...]
    type: Literal["media"] = "media"


@dataclass(frozen=True)
class StreamSource:
    url: str
    type: Literal["stream"] = "stream"


@dataclass(frozen=True)
class FmSource:
    frequency_mhz: float
    type: Literal["fm"] = "fm"


@dataclass(frozen=True)
class LineInSource:
    """The controller's line/microphone input, on air for the program's window."""

    type: Literal["line_in"] = "line_in"


@dataclass(frozen=True)
class TtsSource:
    text: str
    lang: str = "vi"
    type: Literal["tts"] = "tts"


Source = MediaSource | StreamSource | FmSource | TtsSource | LineInSource
LIVE_SOURCES = (StreamSource, FmSource, LineInSource)  # relayed for a window: duration_s required


@dataclass(frozen=True)
class Program:
    id: str
    title: str
    priority: Priority
    source: Source
    start: time
    days: frozenset[int] = frozenset(range(7))
    dates: frozenset[date] | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    duration_s: float | None = None
    repeat: int = 1
    repeat_gap_s: float = 0.0  # silence between repetitions of the items
    volume: int = 100
    chime: bool = False

    def runs_on(self, day: date) -> bool:
        if self.valid_from is not None and day < self.valid_from:
            return False
        if self.valid_until is not None and day > self.valid_until:
            return False
        if self.dates is not None:
            return day in self.dates
        return day.weekday() in self.days


@dataclass(frozen=True)
class Occurrence:
    """One window of a program: ``start`` to ``end`` (Unix seconds); ``end`` None means
    the program has no fixed end and is over when its items have played."""

    program: Program
    start: float
    end: float | None
    nominal_end: float | None  # end, or the estimated end of an open window

    @property
    def key(self) -> str:
        return f"{self.program.id}@{self.start:.0f}"


@dataclass(frozen=True)
class Schedule:
    version: int
    device_id: str
    timezone: ZoneInfo
    media: dict[str, MediaEntry]
    programs: tuple[Program, ...]
    fm_fallback_mhz: float | None = None
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def item_durations(self, program: Program) -> list[float | None]:
        """Durations of the program's items in play order, repeats expanded."""
        src = program.source
        if isinstance(src, MediaSource):
            one = [self.media[m].duration_s for m in src.items]
        elif isinstance(src, TtsSource):
            one = [len(src.text) * TTS_SECONDS_PER_CHAR]
        else:
            return [program.duration_s]
        return one * program.repeat

    def nominal_length(self, program: Program) -> float | None:
        if program.duration_s is not None:
            return program.duration_s
        durations = self.item_durations(program)
        if any(d is None for d in durations):
            return None
        gaps = (program.repeat - 1) * program.repeat_gap_s
        return float(sum(d for d in durations if d is not None)) + gaps

    def occurrences(self, start: float, end: float) -> Iterator[Occurrence]:
        """Every window that overlaps [start, end), in start order. Open windows of unknown
        length are taken as lasting up to a day."""
        tz = self.timezone
        first_day = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
        last_day = datetime.fromtimestamp(end, tz).date()
        found: list[Occurrence] = []
        day = first_day
        while day <= last_day:
            for program in self.programs:
                if not program.runs_on(day):
                    continue
                t0 = datetime.combine(day, program.start, tz).timestamp()
                length = self.nominal_length(program)
                w_end = None if program.duration_s is None else t0 + program.duration_s
                nominal = None if length is None else t0 + length
                horizon = nominal if nominal is not None else t0 + 86400.0
                if t0 < end and horizon > start:
                    found.append(Occurrence(program, t0, w_end, nominal))
            day += timedelta(days=1)
        found.sort(key=lambda o: (o.start, o.program.id))
        return iter(found)

    def media_by_urgency(self, now: float, horizon_s: float = 8 * 86400.0) -> list[MediaEntry]:
        """Media ordered by the next time a program needs them; unreferenced media last."""
        order: dict[str, float] = {}
        for occ in self.occurrences(now, now + horizon_s):
            src = occ.program.source
            if isinstance(src, MediaSource):
                for media_id in src.items:
                    order.setdefault(media_id, occ.start)
        far = now + horizon_s * 2
        return sorted(self.media.values(), key=lambda m: (order.get(m.id, far), m.id))

    def referenced_media(self) -> set[str]:
        refs: set[str] = set()
        for program in self.programs:
            if isinstance(program.source, MediaSource):
                refs.update(program.source.items)
        return refs


@dataclass(frozen=True)
class ParsedSchedule:
    schedule: Schedule
    problems: list[tuple[str, str]]


def parse_schedule(doc: object, default_tz: str) -> ParsedSchedule:
    if not isinstance(doc, dict):
        raise ScheduleError("schedule is not a JSON object")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ScheduleError("'version' must be a non-negative integer")
    tz_name = doc.get("timezone") or default_tz
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long
        raise ScheduleError(f"unknown timezone {tz_name!r}") from exc
    raw_media = doc.get("media", [])
    raw_programs = doc.get("programs", [])
    if not isinstance(raw_media, list) or not isinstance(raw_programs, list):
        raise ScheduleError("'media' and 'programs' must be lists")
    problems: list[tuple[str, str]] = []
    media: dict[str, MediaEntry] = {}
    for raw in raw_media:
        try:
            entry = _media_entry(raw)
        except ValueError as exc:
            problems.append((_label(raw), f"media skipped: {exc}"))
            continue
        media[entry.id] = entry
    programs: list[Program] = []
    seen: set[str] = set()
    for raw in raw_programs:
        try:
            program = _program(raw, media)
            if program.id in seen:
                raise ValueError(f"duplicate program id {program.id!r}")
        except ValueError as exc:
            problems.append((_label(raw), str(exc)))
            continue
        seen.add(program.id)
        programs.append(program)
    fallback = doc.get("fm_fallback")
    fallback_mhz = None
    if isinstance(fallback, dict) and fallback.get("frequency_mhz") is not None:
        try:
            fallback_mhz = _frequency(fallback["frequency_mhz"])
        except ValueError as exc:
            problems.append(("fm_fallback", str(exc)))
    schedule = Schedule(version=version, device_id=str(doc.get("device_id", "")),
                        timezone=tz, media=media, programs=tuple(programs),
                        fm_fallback_mhz=fallback_mhz, document=doc)
    return ParsedSchedule(schedule, problems)


def _label(raw: object) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        return str(raw["id"])
    return "?"


def _media_entry(raw: object) -> MediaEntry:
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    media_id, url, sha, size = raw.get("id"), raw.get("url"), raw.get("sha256"), raw.get("size")
    if not isinstance(media_id, str) or not media_id:
        raise ValueError("missing 'id'")
    if not isinstance(url, str) or not url:
        raise ValueError(f"{media_id}: missing 'url'")
    if urlsplit(url).scheme.lower() not in ("", "http", "https"):
        raise ValueError(f"{media_id}: 'url' must be http(s) or relative, got {url[:100]!r}")
    if not isinstance(sha, str) or not _SHA256.match(sha.lower()):
        raise ValueError(f"{media_id}: 'sha256' must be 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{media_id}: 'size' must be a non-negative integer")
    duration = raw.get("duration_s")
    if duration is not None and (not _is_number(duration) or duration < 0):
        raise ValueError(f"{media_id}: 'duration_s' must be a non-negative number")
    return MediaEntry(id=media_id, url=url, sha256=sha.lower(), size=size,
                      duration_s=None if duration is None else float(duration),
                      title=_title(media_id, raw), mime=str(raw.get("mime", "")))


def _title(owner: str, raw: dict[str, Any]) -> str:
    try:
        return check_title(raw.get("title", ""))
    except ValueError as exc:
        raise ValueError(f"{owner}: {exc}") from exc


def _program(raw: object, media: dict[str, MediaEntry]) -> Program:
    if not isinstance(raw, dict):
        raise ValueError("program is not an object")
    pid = raw.get("id")
    if not isinstance(pid, str) or not pid:
        raise ValueError("program without 'id'")
    priority = raw.get("priority", "scheduled")
    if priority not in tuple(PRIORITY_RANK):  # a tuple: any JSON value compares, even a list
        raise ValueError(f"{pid}: unknown priority {priority!r}")
    start = _parse_time(pid, raw.get("start"))
    duration = raw.get("duration_s")
    if duration is not None and (not _is_number(duration) or duration <= 0):
        raise ValueError(f"{pid}: 'duration_s' must be a positive number")
    source = _source(pid, raw.get("source"), media)
    if isinstance(source, LIVE_SOURCES) and duration is None:
        raise ValueError(f"{pid}: a {source.type} program needs 'duration_s'")
    repeat = raw.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 100:
        raise ValueError(f"{pid}: 'repeat' must be an integer 1..100")
    volume = raw.get("volume", 100)
    if not isinstance(volume, int) or isinstance(volume, bool) or not 0 <= volume <= 100:
        raise ValueError(f"{pid}: 'volume' must be an integer 0..100")
    gap = raw.get("repeat_gap_s", 0)
    if not _is_number(gap) or not 0 <= gap <= MAX_REPEAT_GAP_S:
        raise ValueError(f"{pid}: 'repeat_gap_s' must be a number 0..{MAX_REPEAT_GAP_S:g}")
    return Program(
        id=pid, title=_title(pid, raw), priority=priority, source=source,
        start=start, days=_days(pid, raw.get("days")), dates=_dates(pid, raw.get("dates")),
        valid_from=_date(pid, "valid_from", raw.get("valid_from")),
        valid_until=_date(pid, "valid_until", raw.get("valid_until")),
        duration_s=None if duration is None else float(duration), repeat=repeat,
        repeat_gap_s=float(gap), volume=volume, chime=bool(raw.get("chime", False)))


def _source(pid: str, raw: object, media: dict[str, MediaEntry]) -> Source:
    if not isinstance(raw, dict):
        raise ValueError(f"{pid}: 'source' must be an object")
    kind = raw.get("type")
    if kind == "media":
        items = raw.get("items")
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise ValueError(f"{pid}: media source needs a non-empty 'items' list")
        unknown = [i for i in items if i not in media]
        if unknown:
            raise ValueError(f"{pid}: unknown media id {', '.join(unknown)}")
        return MediaSource(tuple(items))
    if kind == "stream":
        url = raw.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https") \
                or not urlsplit(url).hostname:
            raise ValueError(f"{pid}: stream source needs an http(s) 'url'")
        return StreamSource(url)
    if kind == "fm":
        return FmSource(_frequency(raw.get("frequency_mhz"), pid))
    if kind == "line_in":
        return LineInSource()
    if kind == "tts":
        try:
            return TtsSource(check_speech_text(raw.get("text")),
                             check_lang(raw.get("lang", "vi")))
        except ValueError as exc:
            raise ValueError(f"{pid}: tts source: {exc}") from exc
    raise ValueError(f"{pid}: unknown source type {kind!r}")


def in_fm_band(frequency_mhz: float) -> bool:
    return any(low <= frequency_mhz <= high for low, high in FM_BANDS_MHZ)


def _frequency(value: object, pid: str = "fm_fallback") -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not in_fm_band(float(value)):
        raise ValueError(f"{pid}: 'frequency_mhz' must be within {FM_BANDS_TEXT}, "
                         f"got {value!r}")
    return float(value)


def _parse_time(pid: str, value: object) -> time:
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{pid}: 'start' must be HH:MM:SS, got {value!r}")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _days(pid: str, value: object) -> frozenset[int]:
    if value is None:
        return frozenset(range(7))
    if not isinstance(value, list) or not all(v in DAY_NAMES for v in value):
        raise ValueError(f"{pid}: 'days' must be a list of {', '.join(DAY_NAMES)}")
    return frozenset(DAY_NAMES.index(v) for v in value)


def _dates(pid: str, value: object) -> frozenset[date] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{pid}: 'dates' must be a list of YYYY-MM-DD")
    return frozenset(_date(pid, "dates", v) or date.min for v in value)


def _date(pid: str, key: str, value: object) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"{pid}: '{key}' must be YYYY-MM-DD, got {value!r}") from exc


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
