"""The day timeline of `broadcast-agent report --timeline DAY --out FILE.png`: one row per
class, one bar per play from its first to its last sample, failed plays hatched.

matplotlib is the optional extra `report` (setup.cfg; Debian's python3-matplotlib on a
controller), imported only here, with the Agg backend (no display)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.cli.report import CLASSES, class_title, play_class
from agent.state.plays import Play

COLOURS = {"ordinary": "#4c72b0", "priority": "#dd8452", "emergency": "#c44e52",
           "fm_relay": "#55a868", "live": "#8172b3", "line_in": "#937860"}


def draw_timeline(plays: Sequence[Play], day: date, tz: ZoneInfo, out: Path,
                  _: Callable[[str], str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    midnight = datetime.combine(day, time(), tz).timestamp()
    figure, axes = plt.subplots(figsize=(14, 4.5), dpi=100)
    try:
        for row, name in enumerate(CLASSES):
            for play in (p for p in plays if play_class(p.record) == name):
                end = play.ended_at if play.ended_at is not None else play.started_at
                start_h = (play.started_at - midnight) / 3600
                # Short items stay visible at a day's scale: at least one pixel wide.
                width_h = max((end - play.started_at) / 3600, 24 / 1200)
                axes.broken_barh([(start_h, width_h)], (row - 0.35, 0.7),
                                 facecolors=COLOURS[name],
                                 hatch="//" if play.outcome in ("failed", None) else None,
                                 edgecolor="black" if play.outcome != "completed" else None,
                                 linewidth=0.3)
        axes.set_yticks(range(len(CLASSES)), [class_title(n, _) for n in CLASSES])
        axes.set_xlim(0, 24)
        axes.set_xticks(range(0, 25, 2), [f"{h:02d}:00" for h in range(0, 25, 2)])
        axes.set_ylim(-0.6, len(CLASSES) - 0.4)
        axes.invert_yaxis()
        axes.grid(axis="x", linestyle=":", linewidth=0.5)
        axes.set_title(_("What aired on {day} ({tz})").format(day=day, tz=tz))
        axes.set_xlabel(_("Hour of the day (hatched: failed or cut)"))
        figure.tight_layout()
        figure.savefig(out, format="png")
    finally:
        plt.close(figure)
