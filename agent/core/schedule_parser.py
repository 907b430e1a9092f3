"""Parsing and validation of the Schedule document of source-api.md.

A document that is unusable as a whole raises ScheduleError; a single invalid program is
skipped and listed in ``ParsedSchedule.problems`` (fault ``schedule_invalid_program``)
while the rest of the schedule is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.core.schedule import (
    FM_BANDS_TEXT,
    LIVE_SOURCES,
    PRIORITY_RANK,
    FmSource,
    LineInSource,
    MediaEntry,
    MediaSource,
    Program,
    Schedule,
    Source,
    StreamSource,
    TtsSource,
    in_fm_band,
)
from agent.core.text import check_lang, check_speech_text, check_title

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_REPEAT_GAP_S = 3600.0

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class ScheduleError(ValueError):
    """The document as a whole cannot be used."""


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
