"""When a staged update may switch: a quiet moment inside the maintenance window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

QUIET_AHEAD_S = 120.0  # nothing may be due this soon: the restart and pre-roll fit before it
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    """A daily span of local time, ``HH:MM-HH:MM``; it may wrap past midnight, and
    ``00:00-24:00`` is the whole day."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> Window:
        found = _WINDOW.match(text)
        if found is None:
            raise ValueError(f"must be HH:MM-HH:MM (local time), got {text!r}")
        start = int(found[1]) * 60 + int(found[2])
        end = int(found[3]) * 60 + int(found[4])
        if end > 24 * 60 or start == end:
            raise ValueError(f"must be a span of at least one minute within a day, got {text!r}")
        return cls(start, end)

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min


def switch_blocker(now: float, snapshot: dict[str, Any], window: Window,
                   tz: ZoneInfo) -> str | None:
    """Why a staged update may not switch now (None: it may). ``snapshot`` is the control
    loop's: what plays and what is next."""
    if not window.contains(datetime.fromtimestamp(now, tz)):
        return "outside the maintenance window"
    playing = snapshot.get("playing")
    if playing is not None:
        return f"{playing['priority']} broadcast on air"
    for upcoming in snapshot.get("next", ()):
        if datetime.fromisoformat(upcoming["start"]).timestamp() - now < QUIET_AHEAD_S:
            return f"program {upcoming['program_id']} is due"
    return None
