"""The simulated field: one controller's durable state and its surroundings, and the agent
booted on it again and again (restarts, power cuts).

Everything that decides or records is the product's own (ControlLoop with its arbiter,
ledger and amplifier policy, PlayJournal, StateStore, Journal, CommandValidator); what
would touch hardware, processes or the network is an in-memory backend of the same
interface (agent/playout/memory_*.py). Time is a ManualClock: nothing sleeps, nothing
races, and a sequence of field events replays identically.

The disk is a SQLite file under a tmpfs directory, written by the real StateStore
(``synchronous=FULL``: a committed transaction is what was fsynced). A power cut drops the
boot without stopping anything, so exactly what was committed survives; "disk full"
caps the database's pages (``max_page_count``), so writes fail with SQLite's own
``database or disk is full``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.control.loop import ControlLoop
from agent.control.state import CommandReceived, ControlSettings, ScheduleApplied
from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.core.schedule import Schedule
from agent.core.schedule_parser import ScheduleError, parse_schedule
from agent.mqtt.commands import Command, CommandLimits, CommandValidator, Rejection
from agent.playout.memory_engine import MemoryEngine
from agent.playout.memory_media import (
    LOUD_FRAME,
    Library,
    MemoryCache,
    MemoryDecoders,
    MemorySpeech,
)
from agent.playout.memory_tuner import MemoryTuner
from agent.source.sync import KEY_DOC
from agent.state.journal import MQTT, REPORT, Journal
from agent.state.plays import PlayJournal
from agent.state.store import STATE_DB, OutboxRecord, StateStore
from drivers.amplifier.none import NoAmplifier
from drivers.amplifier.sim import SimAmplifier
from drivers.mixer.software import SoftwareMixer

RATE = 50  # frames per second: 20 ms of resolution, enough for every rule of the core
TZ = "UTC"
LIMITS = CommandLimits(max_age_s=600.0)
DEVICE = "xa-sim-01"
SETTINGS = ControlSettings(
    rate=RATE, late_start_grace_s=30.0, default_volume=80, emergency_volume=100,
    warmup_s=1.0, idle_off_s=30.0, decoder_hang_s=3.0, stream_caching_ms=300,
    dead_air_s=5.0, dead_air_dbfs=-50.0)
CHIME_S = 1.0


@dataclass
class Field:
    """What outlives a boot: the clock, the disk, the media and the air."""

    state_dir: Path
    clock: ManualClock = field(default_factory=ManualClock)
    library: Library = field(default_factory=lambda: Library(RATE))
    stations: dict[float, bool] = field(default_factory=dict)  # FM: heard or not
    speech_broken: bool = False
    disk_full: bool = False
    # The daemon's wiring options: no FM receiver (fm.backend: none, so no tuner at all);
    # the sim amplifier (amplifier.backend: sim), logging its transitions on this clock.
    has_tuner: bool = True
    amplifier_log: bool = False


class Boot:
    """One run of the agent on the field, wired as the daemon wires it."""

    def __init__(self, world: Field) -> None:
        self.world = world
        clock = world.clock
        # No reserve file: a full disk is modelled by capping the database (set_disk_full).
        self.store = StateStore(world.state_dir / STATE_DB, reserve_bytes=0)
        self.faults = FaultRegistry(clock.now)
        self.journal = Journal(self.store, clock, ZoneInfo(TZ))
        self.faults.subscribe(self.journal.on_fault)
        self.plays = PlayJournal(self.store)
        self.engine = MemoryEngine(RATE, clock, lambda event: self.loop.on_engine_event(event))
        self.decoders = MemoryDecoders(world.library, clock)
        self.speech = MemorySpeech(world.library)
        self.speech.broken = world.speech_broken
        self.tuner = MemoryTuner(self.faults, clock, world.stations) if world.has_tuner \
            else None
        self.cache = MemoryCache(world.library)  # its files are the field's, its pins ours
        self.amplifier = SimAmplifier(world.state_dir, clock) if world.amplifier_log \
            else NoAmplifier()
        self.schedule: Schedule | None = None
        self.loop = ControlLoop(
            settings=SETTINGS, clock=clock, engine=self.engine, decoders=self.decoders,
            media=self.cache, tts=self.speech, tuner=self.tuner, line_in=None,
            amplifier=self.amplifier,
            mixer=SoftwareMixer(), chime_pcm=LOUD_FRAME * round(CHIME_S * RATE),
            journal=self.journal, plays=self.plays, faults=self.faults, store=self.store,
            on_change=lambda: None, sync_now=lambda: None, count_command=lambda *_: None,
            observe_tick=lambda _: None,
            clock_trusted=lambda: True)
        self.validator = CommandValidator(None, LIMITS, self.store, clock, self.media_known,
                                          device_id=DEVICE)
        self.set_disk_full(world.disk_full)
        self.loop.recover()
        doc = self.store.get(KEY_DOC)
        if doc is not None:
            self.schedule = parse_schedule(doc, TZ).schedule
            self.loop.post(ScheduleApplied(self.schedule))

    def media_known(self, media_id: str) -> bool:
        entry = None if self.schedule is None else self.schedule.media.get(media_id)
        return entry is not None and self.cache.path(entry.sha256) is not None

    def set_disk_full(self, full: bool) -> None:
        """Caps the database at its present size (full), or lifts the cap."""
        self.world.disk_full = full
        with self.store.transaction() as db:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count={pages if full else 1 << 30}")

    # --- what the field does to the agent ----------------------------------------------
    def apply_schedule(self, doc: dict[str, Any]) -> bool:
        """As SyncService applies a fetched document: parsed, kept, then handed over."""
        try:
            schedule = parse_schedule(json.loads(json.dumps(doc)), TZ).schedule
        except ScheduleError:
            return False
        if self.schedule is not None and schedule.version < self.schedule.version:
            return False
        try:
            self.store.put(KEY_DOC, doc)
        except sqlite3.OperationalError:  # the disk is full: the next poll tries again
            return False
        self.schedule = schedule
        self.loop.post(ScheduleApplied(schedule))
        return True

    def command(self, payload: bytes) -> Command | Rejection | None:
        """As MqttLink hands a command over: validated at the door, then posted. None:
        the disk is full, so it could not even be remembered (MqttLink logs and drops it)."""
        try:
            verdict = self.validator.check(payload)
            if isinstance(verdict, Command):
                self.journal.ack(verdict.id, "accepted")
        except sqlite3.OperationalError:
            return None
        if isinstance(verdict, Command):
            self.loop.post(CommandReceived(verdict))
        return verdict

    def run(self) -> None:
        """The card plays up to the clock's present; then one turn of the control loop."""
        self.engine.advance()
        self.loop.step()

    def take_outbox(self) -> tuple[list[OutboxRecord], list[OutboxRecord]]:
        """What the uploader and the MQTT link would send now: (reports, mqtt records)."""
        reports = self.store.pending(REPORT, 10_000)
        mqtt = self.store.pending(MQTT, 10_000)
        self.store.ack([r.seq for r in reports + mqtt])
        return reports, mqtt

    def shut_down(self) -> None:
        """A clean stop (systemctl restart): what plays is reported and released."""
        self.loop.stop()

    def power_cut(self) -> None:
        """Nothing more is written: only what was committed survives (also the end of a
        boot that was shut down)."""
        self.store.close()
