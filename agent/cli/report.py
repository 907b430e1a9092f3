"""`broadcast-agent report --from DATE --to DATE`: what aired, by class, from the durable
play journal (agent/state/plays.py), for the province's and commune's periodic reports.

Classes (Circular 39's bulletin classes plus the relays), first match wins: `line_in`
(source line_in), `fm_relay` (source fm), then by priority: `emergency`, `live`,
`priority`, and `ordinary` (scheduled). Per class:
- items: distinct (activation, item) pairs that put audio on the air ("số tin, bài"); a
  preempted item and its restart are one item;
- hours: the source's own audio delivered (sum of `played_s`);
- share aired: `played_s` over the time the plays held the air, where each play counts
  max(played_s, ended_at − started_at): a relay that delivered silence, or a play cut by a
  fault, lowers it. Items that never started (media missing at the time) are not in the
  journal and are not counted (docs/field.md);
- outcomes (completed, preempted, stopped, failed, cut = cut by a crash or power cut).
The faults that explain the rest: the outcomes, and the fault raises of the span still in
the report outbox (delivered ones are held by the source system, not the controller).

Dates are in the config's timezone; `--to` is inclusive. Text in Vietnamese unless the
locale is English (agent/cli/i18n.py); `--json` (English keys) and `--csv` for scripts
and spreadsheets. `--timeline DAY --out FILE.png` draws that day (agent/cli/timeline.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.cli.i18n import vietnamese_unless_english
from agent.config.loader import load_config
from agent.state.journal import REPORT
from agent.state.plays import Play, PlayJournal
from agent.state.store import STATE_DB, StateStore

CLASSES = ("ordinary", "priority", "emergency", "fm_relay", "live", "line_in")
OUTCOMES = ("completed", "preempted", "stopped", "failed", "cut")
Translate = Callable[[str], str]


def play_class(record: dict[str, Any]) -> str:
    if record["source"] == "line_in":
        return "line_in"
    if record["source"] == "fm":
        return "fm_relay"
    return {"emergency": "emergency", "live": "live", "priority": "priority"}.get(
        record["priority"], "ordinary")


def class_title(name: str, _: Translate) -> str:
    return {"ordinary": _("Ordinary programmes"), "priority": _("Priority bulletins"),
            "emergency": _("Emergency bulletins"), "fm_relay": _("FM relay"),
            "live": _("Live relay"), "line_in": _("Line-in / microphone")}[name]


@dataclass
class ClassStats:
    items: int = 0
    aired_s: float = 0.0
    planned_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def share(self) -> float | None:
        """Aired over planned, 0..1; None when nothing was planned."""
        return self.aired_s / self.planned_s if self.planned_s > 0 else None


def summarize(plays: Iterable[Play]) -> dict[str, ClassStats]:
    stats = {name: ClassStats() for name in CLASSES}
    aired_items: dict[str, set[tuple[str, int]]] = {name: set() for name in CLASSES}
    for play in plays:
        name = play_class(play.record)
        played_s = float(play.record.get("played_s") or 0.0)
        held_s = 0.0 if play.ended_at is None else play.ended_at - play.started_at
        entry = stats[name]
        entry.aired_s += played_s
        entry.planned_s += max(played_s, held_s)
        entry.outcomes[play.outcome or "cut"] += 1
        if played_s > 0:
            aired_items[name].add((play.activation, play.item))
    for name, items in aired_items.items():
        stats[name].items = len(items)
    return stats


def faults_raised(store: StateStore, start: float, end: float) -> Counter[str]:
    """Fault raises in [start, end) among the fault reports still in the outbox."""
    found: Counter[str] = Counter()
    for record in store.pending(REPORT, limit=store.outbox_max):
        body = record.payload
        if record.kind != "fault" or body.get("cleared_at") is not None:
            continue
        if start <= datetime.fromisoformat(body["raised_at"]).timestamp() < end:
            found[body["code"]] += 1
    return found


@dataclass(frozen=True)
class Report:
    first: date
    last: date
    timezone: str
    stats: dict[str, ClassStats]
    faults: Counter[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.first.isoformat(), "to": self.last.isoformat(),
            "timezone": self.timezone,
            "classes": [{"class": name, "items": s.items, "hours": round(s.aired_s / 3600, 3),
                         "aired_s": round(s.aired_s, 3), "planned_s": round(s.planned_s, 3),
                         "share_aired": None if s.share is None else round(s.share, 4),
                         "outcomes": {o: s.outcomes[o] for o in OUTCOMES}}
                        for name, s in self.stats.items()],
            "faults": dict(sorted(self.faults.items())),
        }


def day_span(first: date, last: date, tz: ZoneInfo) -> tuple[float, float]:
    """[first 00:00, the day after last 00:00) in ``tz``, as Unix seconds."""
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    return start.timestamp(), end.timestamp()


def build_report(store: StateStore, first: date, last: date, tz: ZoneInfo) -> Report:
    start, end = day_span(first, last, tz)
    plays = PlayJournal(store).between(start, end)
    return Report(first, last, str(tz), summarize(plays), faults_raised(store, start, end))


def _share_text(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def render_text(report: Report, _: Translate) -> str:
    lines = [_("Broadcast report {first} to {last} ({tz})").format(
        first=report.first, last=report.last, tz=report.timezone), ""]
    header = (_("Class"), _("Items"), _("Hours"), _("Share aired"), _("Completed"),
              _("Preempted"), _("Stopped"), _("Failed"), _("Cut"))
    rows = [(class_title(name, _), str(s.items), f"{s.aired_s / 3600:.2f}",
             _share_text(s.share), *(str(s.outcomes[o]) for o in OUTCOMES))
            for name, s in report.stats.items()]
    total = ClassStats(sum(s.items for s in report.stats.values()),
                       sum(s.aired_s for s in report.stats.values()),
                       sum(s.planned_s for s in report.stats.values()),
                       sum((s.outcomes for s in report.stats.values()), Counter()))
    rows.append((_("Total"), str(total.items), f"{total.aired_s / 3600:.2f}",
                 _share_text(total.share), *(str(total.outcomes[o]) for o in OUTCOMES)))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    lines.append("")
    if report.faults:
        lines.append(_("Faults raised in the span (not yet delivered to the source "
                       "system):"))
        lines += [f"  {code}: {count}" for code, count in sorted(report.faults.items())]
    else:
        lines.append(_("No fault reports of the span are held on this controller (delivered "
                       "ones are in the source system)."))
    return "\n".join(lines) + "\n"


def render_csv(report: Report, _: Translate) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["class", "title", "items", "hours", "aired_s", "planned_s",
                     "share_aired", *OUTCOMES])
    for name, s in report.stats.items():
        writer.writerow([name, class_title(name, _), s.items, f"{s.aired_s / 3600:.3f}",
                         f"{s.aired_s:.3f}", f"{s.planned_s:.3f}",
                         "" if s.share is None else f"{s.share:.4f}",
                         *(s.outcomes[o] for o in OUTCOMES)])
    return out.getvalue()


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def report_command(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    _ = vietnamese_unless_english().gettext
    tz = ZoneInfo(cfg.timezone)
    store = StateStore(cfg.state_dir / STATE_DB)
    try:
        if args.timeline is not None:
            if args.out is None:
                print(_("--timeline needs --out FILE.png"), file=sys.stderr)
                return 2
            from agent.cli.timeline import draw_timeline

            start, end = day_span(args.timeline, args.timeline, tz)
            draw_timeline(PlayJournal(store).between(start, end), args.timeline, tz,
                          args.out, _)
            print(_("Timeline of {day} written to {path}").format(day=args.timeline,
                                                                  path=args.out))
            return 0
        if args.first is None or args.last is None:
            print(_("report needs --from and --to (or --timeline DAY)"), file=sys.stderr)
            return 2
        if args.last < args.first:
            print(_("--to is before --from"), file=sys.stderr)
            return 2
        report = build_report(store, args.first, args.last, tz)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    elif args.csv:
        sys.stdout.write(render_csv(report, _))
    else:
        sys.stdout.write(render_text(report, _))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="what aired, by class (items, hours, share aired), from the play "
                       "journal; or a day's timeline as a PNG")
    parser.add_argument("--from", dest="first", type=_date, metavar="DATE",
                        help="first day (YYYY-MM-DD, config timezone)")
    parser.add_argument("--to", dest="last", type=_date, metavar="DATE",
                        help="last day, inclusive")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="JSON (English keys)")
    formats.add_argument("--csv", action="store_true", help="CSV for a spreadsheet")
    parser.add_argument("--timeline", type=_date, metavar="DAY",
                        help="draw what aired that day (needs --out and matplotlib)")
    parser.add_argument("--out", type=Path, metavar="FILE.png", help="where --timeline draws")
    parser.set_defaults(func=report_command)
