"""The Schedule of source-api.md as the agent plans with it: programs, their sources and
media, and their windows (occurrences). The document is parsed and validated by
agent.core.schedule_parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

# `priority` is Circular 39's priority bulletin ("bản tin ưu tiên"), above the commune's
# ordinary (scheduled) programmes and below live relays and emergencies.
Priority = Literal["scheduled", "priority", "live", "emergency"]
PRIORITY_RANK: dict[str, int] = {"scheduled": 0, "priority": 1, "live": 2, "emergency": 3}
# The commune FM band (QCVN 70:2013/BTTTT, the commune wireless stations a cluster relays)
# and the broadcast band. The RTL-SDR's R820T tuner receives about 24–1766 MHz (docs/fm.md),
# so both are within reach; anything else is refused.
FM_BANDS_MHZ = ((54.0, 68.0), (76.0, 108.0))
FM_BANDS_TEXT = " or ".join(f"{low:g}–{high:g} MHz" for low, high in FM_BANDS_MHZ)
# An estimate for windows of TTS programs without duration_s (only used to decide whether a
# late program is still worth starting and to order downloads; never to cut audio).
TTS_SECONDS_PER_CHAR = 0.08


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


def in_fm_band(frequency_mhz: float) -> bool:
    return any(low <= frequency_mhz <= high for low, high in FM_BANDS_MHZ)
