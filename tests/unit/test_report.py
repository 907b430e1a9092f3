"""`broadcast-agent report`: a simulated month of plays written through the real
PlayJournal, counted independently here, against the report's text, JSON, CSV and
timeline PNG."""

from __future__ import annotations

import csv
import io
import json
import random
import struct
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.cli.main import main
from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.state.journal import Journal, rfc3339
from agent.state.plays import PlayJournal
from agent.state.store import STATE_DB, StateStore

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MONTH = [date(2026, 11, 1) + timedelta(days=n) for n in range(30)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Expected:
    """What the test itself wrote, per class."""

    items: set[tuple[str, int]] = field(default_factory=set)
    aired_s: float = 0.0
    held_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)


class Month:
    """Writes a month of plays through the real journal and keeps its own tally."""

    def __init__(self, state_dir: Path) -> None:
        self.store = StateStore(state_dir / STATE_DB)
        self.plays = PlayJournal(self.store)
        self.expected: dict[str, Expected] = defaultdict(Expected)

    def play(self, cls: str, activation: str, item: int, *, source: str, priority: str,
             at: float, played_s: float, held_s: float, outcome: str | None,
             in_span: bool = True) -> None:
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()), "program_id": activation.split("@")[0],
            "source": source, "priority": priority, "started_at": rfc3339(at, TZ)}
        self.plays.on_air(activation, item, record, at)
        if outcome is not None:
            self.plays.ended({**record, "ended_at": rfc3339(at + held_s, TZ),
                              "played_s": played_s, "outcome": outcome}, at + held_s)
        if not in_span:
            return
        tally = self.expected[cls]
        tally.outcomes[outcome or "cut"] += 1
        if outcome is None:  # cut by a power cut: no ended_at, nothing known to have aired
            return
        tally.aired_s += played_s
        tally.held_s += max(played_s, held_s)
        if played_s > 0:
            tally.items.add((activation, item))


def at(day: date, hour: int, minute: int = 0, second: float = 0.0) -> float:
    return datetime.combine(day, time(hour, minute), TZ).timestamp() + second


def simulate(month: Month, rng: random.Random) -> None:
    for day in MONTH:
        # The morning programme: three items; some days the second is preempted by a
        # priority bulletin and restarts after it.
        key = f"p-sang@{at(day, 6):.0f}"
        lengths = [rng.uniform(60, 600) for _ in range(3)]
        start = at(day, 6)
        for index, length in enumerate(lengths):
            if index == 1 and rng.random() < 0.4:
                month.play("ordinary", key, 1, source="media", priority="scheduled",
                           at=start, played_s=30.0, held_s=30.0, outcome="preempted")
                month.play("priority", f"p-ut@{start + 30:.0f}", 0, source="tts",
                           priority="priority", at=start + 30, played_s=45.5, held_s=45.5,
                           outcome="completed")
                start += 75.5
            month.play("ordinary", key, index, source="media", priority="scheduled",
                       at=start, played_s=length, held_s=length, outcome="completed")
            start += length
        # Noon FM relay of 30 min; now and then the station is lost after 10 minutes.
        lost = rng.random() < 0.2
        month.play("fm_relay", f"p-fm@{at(day, 11):.0f}", 0, source="fm", priority="scheduled",
                   at=at(day, 11), played_s=600.0 if lost else 1800.0, held_s=1800.0,
                   outcome="failed" if lost else "completed")
        # The district's live stream in the evening, stopped by the operator on Sundays.
        sunday = day.weekday() == 6
        month.play("live", f"p-huyen@{at(day, 19):.0f}", 0, source="stream", priority="live",
                   at=at(day, 19), played_s=900.0 if sunday else 3600.0,
                   held_s=900.0 if sunday else 3600.0,
                   outcome="stopped" if sunday else "completed")
        # The commune office's microphone, some days.
        if rng.random() < 0.5:
            length = rng.uniform(30, 300)
            month.play("line_in", f"cmd:{uuid.uuid4()}", 0, source="line_in", priority="live",
                       at=at(day, 8, 30), played_s=length, held_s=length, outcome="completed")
    # An emergency, with its TTS repeated three times; the power is cut in the last one.
    storm = f"cmd:{uuid.uuid4()}"
    for index in range(3):
        month.play("emergency", storm, index, source="tts", priority="emergency",
                   at=at(MONTH[9], 14, second=20.0 * index), played_s=18.0, held_s=18.0,
                   outcome=None if index == 2 else "completed")
    # A relay that delivered only silence: failed, held the air for its window.
    month.play("fm_relay", f"p-fm2@{at(MONTH[3], 15):.0f}", 0, source="fm",
               priority="priority", at=at(MONTH[3], 15), played_s=0.0, held_s=300.0,
               outcome="failed")
    # Just outside the span, on both sides.
    for outside in (at(date(2026, 10, 31), 23, 59, 59.0), at(date(2026, 12, 1), 0)):
        month.play("ordinary", f"p-x@{outside:.0f}", 0, source="media", priority="scheduled",
                   at=outside, played_s=10.0, held_s=10.0, outcome="completed", in_span=False)


@pytest.fixture
def month(tmp_path: Path) -> tuple[Path, dict[str, Expected]]:
    state_dir = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: xa-1\nsource: {{url: http://127.0.0.1:9/api}}\n"
                      f"state_dir: {state_dir}\ntimezone: Asia/Ho_Chi_Minh\n")
    writer = Month(state_dir)
    simulate(writer, random.Random(20261101))
    clock = ManualClock(start=at(MONTH[9], 14))
    faults = FaultRegistry(clock.now)
    faults.subscribe(Journal(writer.store, clock, TZ, mqtt_enabled=False).on_fault)
    faults.raise_("mains_lost", "no mains")
    clock.advance(600)
    faults.clear("mains_lost")
    faults.raise_("sdr_missing", "no dongle")
    writer.store.close()
    return config, writer.expected


def run(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--config", str(config), "report", *args]) == 0
    return capsys.readouterr().out


def test_json_matches_the_independent_tally(month: tuple[Path, dict[str, Expected]],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config, expected = month
    report = json.loads(run(config, "--from", "2026-11-01", "--to", "2026-11-30", "--json",
                            capsys=capsys))
    assert (report["from"], report["to"], report["timezone"]) == (
        "2026-11-01", "2026-11-30", "Asia/Ho_Chi_Minh")
    by_class = {entry["class"]: entry for entry in report["classes"]}
    assert list(by_class) == ["ordinary", "priority", "emergency", "fm_relay", "live",
                              "line_in"]
    for cls, tally in expected.items():
        entry = by_class[cls]
        assert entry["items"] == len(tally.items), cls
        assert entry["aired_s"] == pytest.approx(tally.aired_s, abs=0.01), cls
        assert entry["hours"] == pytest.approx(tally.aired_s / 3600, abs=0.001), cls
        assert entry["share_aired"] == pytest.approx(tally.aired_s / tally.held_s, abs=1e-4)
        assert {k: v for k, v in entry["outcomes"].items() if v} == dict(tally.outcomes), cls
    assert by_class["ordinary"]["items"] == 90  # three items a day, restarts counted once
    assert by_class["live"]["items"] == 30
    assert by_class["emergency"]["items"] == 2  # the third was cut by the power cut
    assert report["faults"] == {"mains_lost": 1, "sdr_missing": 1}


def test_a_span_of_one_day_counts_only_that_day(month: tuple[Path, dict[str, Expected]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = month
    report = json.loads(run(config, "--from", "2026-11-10", "--to", "2026-11-10", "--json",
                            capsys=capsys))
    by_class = {entry["class"]: entry for entry in report["classes"]}
    assert by_class["ordinary"]["items"] == 3
    assert by_class["emergency"]["outcomes"] == {"completed": 2, "preempted": 0,
                                                 "stopped": 0, "failed": 0, "cut": 1}
    assert report["faults"] == {"mains_lost": 1, "sdr_missing": 1}


def test_csv_has_one_row_per_class(month: tuple[Path, dict[str, Expected]],
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    config, expected = month
    rows = list(csv.DictReader(io.StringIO(run(
        config, "--from", "2026-11-01", "--to", "2026-11-30", "--csv", capsys=capsys))))
    assert [row["class"] for row in rows] == ["ordinary", "priority", "emergency",
                                              "fm_relay", "live", "line_in"]
    for row in rows:
        tally = expected[row["class"]]
        assert int(row["items"]) == len(tally.items)
        assert float(row["hours"]) == pytest.approx(tally.aired_s / 3600, abs=0.001)
        assert int(row["failed"]) == tally.outcomes["failed"]
    assert rows[1]["title"] == "Priority bulletins"


@pytest.mark.parametrize(("lang", "title", "header"), [
    (None, "Bản tin ưu tiên", "Báo cáo phát thanh từ 2026-11-01 đến 2026-11-30"),
    ("C.UTF-8", "Bản tin ưu tiên", "Báo cáo phát thanh"),
    ("vi_VN.UTF-8", "Tiếp sóng FM", "Số tin, bài"),
    ("en_US.UTF-8", "Priority bulletins", "Broadcast report 2026-11-01 to 2026-11-30"),
])
def test_text_is_vietnamese_unless_the_locale_is_english(
        month: tuple[Path, dict[str, Expected]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, lang: str | None, title: str, header: str) -> None:
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    if lang is not None:
        monkeypatch.setenv("LANG", lang)
    config, expected = month
    text = run(config, "--from", "2026-11-01", "--to", "2026-11-30", capsys=capsys)
    assert title in text and header in text
    total = next(line for line in text.splitlines()
                 if line.startswith(("Total", "Tổng cộng")))
    assert total.split()[-8] == str(sum(len(t.items) for t in expected.values()))
    assert "mains_lost: 1" in text


def test_timeline_png_is_drawn(month: tuple[Path, dict[str, Expected]], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = month
    out = tmp_path / "2026-11-10.png"
    run(config, "--timeline", "2026-11-10", "--out", str(out), capsys=capsys)
    png = out.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1400, 450)
    assert len(png) > 20_000  # bars, labels and ticks, not a blank canvas


def test_bad_spans_are_usage_errors(month: tuple[Path, dict[str, Expected]],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = month
    assert main(["--config", str(config), "report", "--from", "2026-11-30",
                 "--to", "2026-11-01"]) == 2
    assert main(["--config", str(config), "report", "--from", "2026-11-01"]) == 2
    assert main(["--config", str(config), "report", "--timeline", "2026-11-01"]) == 2
    with pytest.raises(SystemExit):
        main(["--config", str(config), "report", "--from", "1/11/2026", "--to", "2026-11-30"])
    assert "--to" in capsys.readouterr().err
