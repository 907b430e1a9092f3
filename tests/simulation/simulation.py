"""Runs a sequence of field events against the agent and checks the invariants of issue 9
after every step (a step: one turn of the control loop after the clock moved).

The checks compare what the agent says (acks, play reports, Status, its play journal)
with what really happened: the in-memory engine's record of every voice it sounded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.control.playback import Playback
from agent.core.schedule import PRIORITY_RANK
from agent.mqtt.commands import Command
from agent.playout.fm_tuner import TunerLease
from agent.state.plays import PlayJournal
from agent.state.store import OutboxRecord
from tests.simulation import events as ev
from tests.simulation.world import CHIME_S, RATE, SETTINGS, Boot, Field

TICK_S = 0.5
TAIL_S = 60.0  # the sequence's last minute: what was scheduled in it plays out
COMMAND_BOUND_S = 300.0  # an accepted command ends this long after it may start, at most
# Why the highest eligible activation may not be what the card carries (a fault says so).
EXCUSES = frozenset({"play_failed", "media_missing", "tts_failed", "sdr_missing",
                     "stream_unavailable", "fm_signal_lost", "decoder_hung",
                     "decoder_crashed", "dead_air"})
FINAL = ("completed", "failed")
SILENT_MEDIA = ev.MEDIA[2]  # a file of digital silence, when cached: dead air


class Violation(AssertionError):
    pass


class GuardTripped(logging.Handler):
    """The control loop's last-resort guards: an exception reached one, or an item was
    "playing" for the arbiter with nothing carrying it out (a core bug either way)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("control:") or "not played" in str(record.args):
            self.records.append(record)


@dataclass
class Accepted:
    command: Command
    deadline_mono: float
    may_start_mono: float
    acks: list[str] = field(default_factory=list)
    outranked_since: float | None = None


class Simulation:
    def __init__(self, state_dir: Path, has_tuner: bool = True,
                 amplifier_log: bool = False) -> None:
        self.world = Field(state_dir, has_tuner=has_tuner, amplifier_log=amplifier_log)
        self.boot = Boot(self.world)
        # At first every station is on air and the first two media are cached; the events
        # take them away and give them back.
        self.world.library.stations.update((url, "up") for url in ev.STREAMS)
        self.world.library.files[ev.ALERT_URL] = ev.ALERT_S
        self.world.stations.update((mhz, True) for mhz in ev.FREQUENCIES)
        for media_id in ev.MEDIA[:2]:
            self.boot.cache.store(_sha(media_id), _length(media_id))
        self.boots = [self.boot]
        self.guards = GuardTripped()
        logging.getLogger("agent.control.loop").addHandler(self.guards)
        self.version = 0
        self.commands = 0
        self.accepted: dict[str, Accepted] = {}
        self.reports: dict[str, dict[str, Any]] = {}  # first play report per id
        self.sent: list[OutboxRecord] = []  # everything reported or sent over MQTT
        self.disk_was_full = False
        self.tick_s = TICK_S  # the present step's length
        self.unowned_since: float | None = None

    def close(self) -> None:
        logging.getLogger("agent.control.loop").removeHandler(self.guards)
        self.boot.power_cut()

    # --- events --------------------------------------------------------------------------
    def play(self, sequence: list[ev.Event]) -> None:
        for event in sequence:
            self.apply(event)
            self.step()
        self.finish()

    def apply(self, event: ev.Event) -> None:
        world, boot = self.world, self.boot
        if isinstance(event, ev.Wait):
            self.wait(event.seconds)
        elif isinstance(event, ev.Publish):
            self.publish(event)
        elif isinstance(event, ev.Send):
            self.send(event)
        elif isinstance(event, ev.Restart):
            self.restart(event)
        elif isinstance(event, ev.Decoder):
            running = [s for s in boot.decoders.live() if s.state == "playing"]
            if running:
                running[-1].hang() if event.fault == "hang" else running[-1].crash()
        elif isinstance(event, ev.StreamGoes):
            world.library.stations[event.url] = event.state  # type: ignore[assignment]
        elif isinstance(event, ev.Station):
            world.stations[event.frequency_mhz] = event.heard
        elif isinstance(event, ev.Cache):
            sha = _sha(event.media_id)
            boot.cache.store(sha, _length(event.media_id), event.media_id == SILENT_MEDIA) \
                if event.cached else boot.cache.evict(sha)
        elif isinstance(event, ev.Speech):
            world.speech_broken = boot.speech.broken = event.broken
        elif isinstance(event, ev.Disk):
            boot.set_disk_full(event.full)
            self.disk_was_full |= event.full
        else:
            world.clock.step(event.seconds)

    def wait(self, seconds: float) -> None:
        left = seconds
        while left > 1e-9:
            dt = min(TICK_S, left)
            left -= dt
            self.world.clock.advance(dt)
            self.step()

    def publish(self, event: ev.Publish) -> None:
        now = self.world.clock.now()
        self.version += 1
        media = [{"id": m, "url": f"http://source.test/{m}", "sha256": _sha(m), "size": 1,
                  **({"duration_s": _length(m)} if m in event.media_with_duration else {})}
                 for m in ev.MEDIA]
        programs = [{**p, "start": _hhmmss(now + p["start"]),
                     "dates": [_day(now + p["start"])]} for p in event.programs]
        doc: dict[str, Any] = {"version": self.version, "timezone": "UTC", "media": media,
                               "programs": programs}
        if event.fm_fallback:
            doc["fm_fallback"] = {"frequency_mhz": ev.FREQUENCIES[0]}
        self.boot.apply_schedule(doc)

    def send(self, event: ev.Send) -> None:
        now, mono = self.world.clock.now(), self.world.clock.monotonic()
        self.commands += 1
        args = dict(event.args)
        delay = float(args.pop("start_at", 0))
        if "start_at" in event.args:
            args["start_at"] = _rfc3339(now + delay)
        payload = json.dumps({"id": f"c{self.commands}", "type": event.type,
                              "issued_at": _rfc3339(now), "args": args}).encode()
        verdict = self.boot.command(payload)
        if isinstance(verdict, Command):
            bound = COMMAND_BOUND_S if self._ends_by_itself(verdict) else math.inf
            self.accepted[verdict.id] = Accepted(verdict, mono + delay + bound, mono + delay)

    def _ends_by_itself(self, command: Command) -> bool:
        """Everything but a live stream (play_now of a url alone), which plays until a
        ``stop`` (mqtt.md)."""
        return command.type != "play_now" or "media_id" in command.args

    def restart(self, event: ev.Restart) -> None:
        if not event.power_cut:
            self.boot.shut_down()
            self.drain()
        self.boot.power_cut()
        self.world.clock.advance(event.downtime_s)
        self.boot = Boot(self.world)
        self.boots.append(self.boot)

    # --- steps and invariants ------------------------------------------------------------
    def step(self) -> None:
        self.boot.run()
        self.drain()
        self.check_step()

    def drain(self) -> None:
        reports, mqtt = self.boot.take_outbox()
        self.sent += reports + mqtt
        for record in reports:
            if record.kind == "play":
                self.reports.setdefault(record.payload["id"], record.payload)
        for record in mqtt:
            if record.kind == "ack" and record.payload["command_id"] in self.accepted:
                acked = self.accepted[record.payload["command_id"]]
                acked.acks.append(record.payload["status"])

    def check_step(self) -> None:
        if self.guards.records and not self.disk_was_full:
            record = self.guards.records[0]
            raise Violation(f"an exception reached a guard: {record.getMessage()}",
                            record.exc_info)
        mono = self.world.clock.monotonic()
        for acked in self.accepted.values():
            finals = [a for a in acked.acks if a in FINAL]
            if len(finals) > 1:
                raise Violation(f"{acked.command.id} acked {finals}")
            if not finals and mono > acked.deadline_mono and not self.disk_was_full \
                    and not self._under_endless(acked):
                raise Violation(f"{acked.command} never ended (acks {acked.acks})")
        self.check_priority(mono)
        self.check_dead_air()
        self.check_ownership()

    def _under_endless(self, acked: Accepted) -> bool:
        """Something that plays until a ``stop`` (a live stream by play_now) is open at
        its priority or above: by the rules, ``acked`` may wait under it for ever."""
        rank = _rank(acked.command)
        return any(other.deadline_mono == math.inf and other.acks[-1:] == ["accepted"]
                   and _rank(other.command) >= rank for other in self.accepted.values())

    def check_priority(self, mono: float) -> None:
        """An open play command that may start has the air, or something at least as
        high has it, or a fault says why not (after a chime and two ticks: a chime sounds
        before its item, and a command that just ended is acked on the next tick)."""
        if self.tick_s > TICK_S:  # the coarse tail: the loop reacts a long step late
            for acked in self.accepted.values():
                acked.outranked_since = None
            return
        grace = CHIME_S + SETTINGS.warmup_s + 2 * TICK_S
        playing = self.boot.loop.snapshot()["playing"]
        rank = -1 if playing is None else PRIORITY_RANK[playing["priority"]]
        faults = {f.code for f in self.boot.faults.active()}
        for acked in self.accepted.values():
            cmd = acked.command
            if cmd.type not in ("emergency", "play_now", "fm_relay") or acked.acks[-1:] \
                    != ["accepted"] or mono < acked.may_start_mono + grace:
                continue
            if rank >= _rank(cmd) or faults & EXCUSES:
                acked.outranked_since = None
            elif acked.outranked_since is None:
                acked.outranked_since = mono
            elif mono - acked.outranked_since > CHIME_S + 2 * TICK_S:
                raise Violation(f"{cmd.id} ({cmd.type}) may play but {playing} has the air")

    def check_dead_air(self) -> None:
        """Something on air for Status while the card carried only silence for longer
        than ``dead_air_s``: a fault says so (at a volume above zero)."""
        playing = self.boot.loop.snapshot()["playing"]
        engine = self.boot.engine
        if playing is None or self.boot.loop.master_volume == 0:
            return
        started = datetime.fromisoformat(playing["started_at"]).timestamp()
        silent_s = self.world.clock.now() - max(engine.time_of(engine.last_sound_frame),
                                                started)
        faults = {f.code for f in self.boot.faults.active()}
        if silent_s > SETTINGS.dead_air_s + 2 * TICK_S and not faults & EXCUSES:
            raise Violation(f"{playing} is on air, the card silent for {silent_s:.1f} s, "
                            "and no fault says so")

    def check_ownership(self) -> None:
        self.check_the_air_is_owned()
        voice = self.boot.engine.current
        if voice is not None and isinstance(voice.source, TunerLease) \
                and not voice.source.current:
            raise Violation(f"{voice} relays a station the tuner was taken from")
        if any(n < 0 for n in self.boot.cache.pins.values()):
            raise Violation(f"a media file was unpinned more often than pinned: "
                            f"{self.boot.cache.pins}")

    def finish(self) -> None:
        """The end of the sequence: time for every command to end, a clean stop, then
        what must hold over the whole run."""
        end = self.world.clock.monotonic() + COMMAND_BOUND_S
        while self.world.clock.monotonic() < end:
            waiting = any(a.acks[-1] == "accepted" and a.deadline_mono < math.inf
                          for a in self.accepted.values())
            if not waiting and self.world.clock.monotonic() > end - COMMAND_BOUND_S + TAIL_S:
                break
            # Coarser once no command waits: what is scheduled still plays out.
            self.tick_s = TICK_S if waiting else 4 * TICK_S
            self.world.clock.advance(self.tick_s)
            self.step()
        self.boot.shut_down()
        self.drain()
        leases = [] if self.boot.tuner is None else self.boot.tuner.held
        if self.boot.decoders.live() or leases or +self.boot.cache.pins:
            raise Violation("resources held after a stop: "
                            f"{self.boot.decoders.live()} {leases} "
                            f"{self.boot.cache.pins}")
        self.check_history(PlayJournal(self.boot.store))

    def check_history(self, journal: PlayJournal) -> None:
        """Every play is reported, with the outcome the card bears out; nothing finished
        airs again."""
        sounded: dict[str, tuple[int, int]] = {}
        for boot in self.boots:
            for entry in boot.engine.history:
                pb = entry.voice.tag
                if isinstance(pb, Playback) and entry.voice is not pb.chime \
                        and not entry.voice.name.startswith("fallback:"):
                    frames, loud = sounded.get(pb.report_id, (0, 0))
                    sounded[pb.report_id] = (frames + entry.voice.frames_played,
                                             loud + entry.loud_frames)
        over: dict[tuple[str, int], str] = {}
        stopped: set[str] = set()
        for play in journal.between(0.0, 1e12):
            rid = play.record["id"]
            where = (play.activation, play.item)
            again = play.activation in stopped or where in over
            if again:
                raise Violation(f"{where} aired again after {over.get(where, 'stopped')}")
            if play.outcome in FINAL:
                over[where] = play.outcome
            elif play.outcome == "stopped":
                stopped.add(play.activation)
            if self.disk_was_full:
                continue
            report = self.reports.get(rid)
            if report is None:
                raise Violation(f"play {where} ({play.outcome}) was never reported")
            frames, loud = sounded.get(rid, (0, 0))
            # A relay must have carried its station's sound; a file, its samples (a file of
            # silence is completed, and dead air says the rest).
            relay = report["source"] in ("stream", "fm")
            if report["outcome"] == "completed" and (loud if relay else frames) == 0:
                raise Violation(f"{where} reported completed but nothing sounded: {report}")
            if report["played_s"] > frames / RATE + 0.05:
                raise Violation(f"{where} reported {report['played_s']} s, "
                                f"the card carried {frames / RATE} s")

    def check_the_air_is_owned(self) -> None:
        """What the card carries is what Status says plays (past the tick in which the
        engine moved on by itself): nothing sounds that nothing will end."""
        voice = self.boot.engine.current
        pb = None if voice is None else voice.tag
        playing = self.boot.loop.snapshot()["playing"]
        owned = not isinstance(pb, Playback) or voice is pb.chime or (
            playing is not None and playing["program_id"] == pb.activation.program_id)
        mono = self.world.clock.monotonic()
        if owned:
            self.unowned_since = None
        elif self.unowned_since is None:
            self.unowned_since = mono
        elif mono - self.unowned_since <= 2 * self.tick_s:
            pass
        else:
            raise Violation(f"{voice} sounds but Status says {playing} plays")


def _rank(command: Command) -> int:
    return PRIORITY_RANK[command.args.get("priority", "emergency")]


def _sha(media_id: str) -> str:
    return hashlib.sha256(media_id.encode()).hexdigest()


def _length(media_id: str) -> float:
    return 4.0 + 3 * ev.MEDIA.index(media_id)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _hhmmss(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).date().isoformat()
