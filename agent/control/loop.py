"""The control loop: the only caller of the Arbiter, and the one that carries out its
decisions through the playout engine, the amplifier and the journal.

It runs on one thread ("control"). Other threads never touch its state: they post facts
(a schedule was applied, a command arrived, the engine started or ended a voice) and the
loop applies them in order, then evaluates the arbiter and looks ahead to pre-roll
decoders and warm the amplifier so that programs start on their exact sample.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.control.activations import (
    VOX_PREFIX,
    command_activation,
    program_activation,
    vox_activation,
)
from agent.control.amplifier import AmplifierPolicy, AmplifierSwitch
from agent.control.ledger import CommandLedger, OpenCommands
from agent.control.playback import LevelMeter, Playback, item_ref
from agent.core.arbiter import Activation, Arbiter, Item, StartItem, StopItem
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.core.schedule import Priority, Schedule, TtsSource
from agent.mqtt.commands import Command
from agent.playout.decoder import Decoders
from agent.playout.engine import (
    Engine,
    EngineEvent,
    OutputFailed,
    OutputRecovered,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from agent.playout.fm_tuner import TunerLease
from agent.playout.line_in import LineInLease
from agent.playout.sources import BufferSource, StreamSource
from agent.playout.tts import Speech, SpokenStream
from agent.state.journal import Journal
from agent.state.plays import PlayJournal
from agent.state.store import StateStore
from drivers.amplifier.base import Amplifier
from drivers.mixer.base import Mixer
from drivers.mixer.curve import effective_volume, volume_to_gain

log = logging.getLogger(__name__)

PREROLL_S = 2.5  # decoders start this long before a timed start (an MP3 under load: ~1 s)
STREAM_RETRY_S = 5.0
PROBE_LOUD_S = 0.5  # a dead stream's probe counts as back when it was loud this recently
MAX_DECODER_RESTARTS = 3
VOLUME_KEY = "audio.master_volume"
BUSY_WAIT_S = 0.05  # the deciding thread's longest wait while anything plays or is due
IDLE_WAIT_S = 0.5


class MediaLookup(Protocol):
    def path(self, sha256: str) -> Path | None: ...

    def duration_s(self, sha256: str) -> float | None: ...

    def pin(self, sha256: str) -> Path | None: ...

    def unpin(self, sha256: str) -> None: ...


class FmTunerLike(Protocol):
    def acquire(self, frequency_mhz: float) -> TunerLease: ...

    def busy_elsewhere(self, frequency_mhz: float) -> bool: ...


class LineInputLike(Protocol):
    def acquire(self) -> LineInLease: ...


@dataclass(frozen=True)
class ControlSettings:
    rate: int
    late_start_grace_s: float
    default_volume: int
    emergency_volume: int
    warmup_s: float
    idle_off_s: float
    decoder_hang_s: float
    stream_caching_ms: int
    dead_air_s: float
    dead_air_dbfs: float
    vox_priority: Priority = "live"  # line_in.priority
    vox_chime: bool = False  # line_in.chime


@dataclass(frozen=True)
class ScheduleApplied:
    schedule: Schedule


@dataclass(frozen=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True)
class EngineReported:
    event: EngineEvent


@dataclass(frozen=True)
class Reconfigured:
    settings: ControlSettings


@dataclass(frozen=True)
class VoxChanged:
    on: bool  # VOX heard someone start (True) or stop (False) speaking into the line input


Fact = ScheduleApplied | CommandReceived | EngineReported | Reconfigured | VoxChanged


class ItemUnavailable(Exception):
    """The item cannot be played now (media not cached, TTS failed, no tuner)."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault


class ControlLoop:
    def __init__(self, *, settings: ControlSettings, clock: Clock, engine: Engine,
                 decoders: Decoders, media: MediaLookup, tts: Speech,
                 tuner: FmTunerLike | None, line_in: LineInputLike | None,
                 amplifier: Amplifier, mixer: Mixer,
                 chime_pcm: bytes, journal: Journal, plays: PlayJournal,
                 faults: FaultRegistry, store: StateStore,
                 on_change: Callable[[], None], sync_now: Callable[[], None],
                 count_command: Callable[[str, str], None],
                 clock_trusted: Callable[[], bool],
                 observe_tick: Callable[[float], None]) -> None:
        self.s = settings
        self._clock = clock
        self._engine = engine
        self._decoders = decoders
        self._media = media
        self._tts = tts
        self._tuner = tuner
        self._line_in = line_in
        self._vox_key: str | None = None  # the VOX activation while VOX is on
        self._amp = AmplifierSwitch(amplifier, faults, clock, self._changed)
        self._mixer = mixer
        self._chime = chime_pcm
        self._journal = journal
        self._plays = plays
        self._faults = faults
        self._store = store
        self._on_change = on_change
        self._sync_now = sync_now
        self._count_command = count_command  # (type, completed|failed) for the metrics
        self._clock_trusted = clock_trusted
        self._observe_tick = observe_tick  # seconds one turn of the deciding thread took
        self._arbiter = Arbiter(late_start_grace_s=settings.late_start_grace_s)
        self._facts: queue.Queue[Fact] = queue.Queue()
        self._schedule: Schedule | None = None
        self._playbacks: dict[tuple[str, int], Playback] = {}
        self._ledger = CommandLedger()
        self._open_commands = OpenCommands(store)
        self.master_volume = int(store.get(VOLUME_KEY, settings.default_volume))
        self._amp_policy = AmplifierPolicy(settings.warmup_s, settings.idle_off_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick_mono = clock.monotonic()
        self._last_stream_retry = 0.0
        self._lookahead = max(settings.warmup_s, PREROLL_S) + 0.5
        self._dirty = False
        self._snapshot = self._build_snapshot()
        self._snapshot_mono = clock.monotonic()

    # --- threads and facts -------------------------------------------------------------
    def post(self, fact: Fact) -> None:
        self._facts.put(fact)

    def on_engine_event(self, event: EngineEvent) -> None:
        self._facts.put(EngineReported(event))

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """What a start does before the first tick: report what a crash left on air."""
        self._plays.prune(self._clock.now())
        self._report_interrupted_onair()
        for command_id, command_type in self._open_commands.cut_by_restart().items():
            self._journal.ack(command_id, "failed", "interrupted: the agent restarted")
            self._count_command(command_type, "failed")
        self._amp.set(False)

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._facts.put(EngineReported(OutputRecovered()))  # wake the loop
        if self._thread is not None:
            self._thread.join(timeout)
        now = self._clock.now()
        for pb in list(self._playbacks.values()):
            if pb.started:
                # Reported stopped; journaled as interrupted, so that the next start
                # resumes it by the late-start rules, as after a power cut.
                pb.outcome = "stopped"
                pb.ended_at = now
                record = pb.record(self._journal.stamp, self.s.rate)
                self._journal.played(record)
                self._plays.interrupted(record)
            self._release(pb)
        self._playbacks.clear()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step(self._wait_s())

    def step(self, wait_s: float = 0.0) -> None:
        """One turn of the control thread: apply the facts posted (waiting up to ``wait_s``
        for the first), then tick. The simulation calls it on a ManualClock instead of
        starting the thread (after :meth:`recover`)."""
        try:
            fact: Fact | None = self._facts.get(timeout=wait_s) if wait_s > 0 \
                else self._facts.get_nowait()
        except queue.Empty:
            fact = None
        began = self._clock.monotonic()
        try:
            while fact is not None:
                self._apply_fact(fact)
                fact = self._facts.get_nowait()
        except queue.Empty:
            pass
        except Exception:
            log.exception("control: a fact could not be applied")
        try:
            self._tick()
        except Exception:
            log.exception("control: tick failed")
        self.last_tick_mono = self._clock.monotonic()
        self._observe_tick(self.last_tick_mono - began)

    def _wait_s(self) -> float:
        now = self._clock.now()
        if self._playbacks or self._next_boundary(now) is not None:
            return BUSY_WAIT_S
        off_due = None if not self._amp.is_on else self._amp_policy.off_due(
            self._idle_since(), self._amp.on_since)
        if off_due is None:
            return IDLE_WAIT_S
        return min(IDLE_WAIT_S, max(BUSY_WAIT_S, off_due - now))

    def _idle_since(self) -> float | None:
        idle = self._engine.idle_since_frame
        return None if idle is None else self._engine.time_of(idle)

    def _apply_fact(self, fact: Fact) -> None:
        try:
            if isinstance(fact, ScheduleApplied):
                self._apply_schedule(fact.schedule)
            elif isinstance(fact, CommandReceived):
                self._execute(fact.command)
            elif isinstance(fact, Reconfigured):
                self._reconfigure(fact.settings)
            elif isinstance(fact, VoxChanged):
                self._vox(fact.on)
            else:
                self._engine_event(fact.event)
        except Exception as exc:
            self._fact_failed(fact, exc)

    def _fact_failed(self, fact: Fact, exc: Exception) -> None:
        """A fact that could not be applied fails what it was about: its command, or the
        item its engine event belongs to."""
        log.error("control: %s could not be applied: %r", type(fact).__name__, exc,
                  exc_info=exc)
        if isinstance(fact, CommandReceived):
            key = f"cmd:{fact.command.id}"
            playing = self._arbiter.playing
            if playing is not None and playing[0] == key:
                self._contain(key, playing[1], exc)
            self._ledger.drop(key)
            self._arbiter.remove(key)
            self._ack(fact.command, "failed", f"play_failed: {exc!r}"[:200])
        elif isinstance(fact, EngineReported) and isinstance(fact.event, VoiceStarted
                                                              | VoiceEnded):
            pb = fact.event.voice.tag
            if isinstance(pb, Playback):
                self._contain(pb.activation.key, pb.index, exc)

    # --- schedule ----------------------------------------------------------------------
    def _apply_schedule(self, schedule: Schedule) -> None:
        old = self._schedule
        self._schedule = schedule
        self._changed()  # the next programs shown in Status change with it
        for program in schedule.programs:
            if isinstance(program.source, TtsSource):
                self._tts.render_ahead(program.source.text, program.source.lang)
        if old is None:
            return
        now = self._clock.now()
        wanted = {o.key for o in schedule.occurrences(now, now + self._lookahead)}
        for key in self._arbiter.keys() - wanted:
            if key not in self._ledger:
                self._carry_out(self._arbiter.remove(key), now)

    def _media_duration(self, media_id: str) -> float | None:
        """The entry's duration_s, or else the length read from the cached file."""
        entry = None if self._schedule is None else self._schedule.media.get(media_id)
        if entry is None:
            return None
        return entry.duration_s if entry.duration_s is not None \
            else self._media.duration_s(entry.sha256)

    def _add_occurrences(self, now: float) -> None:
        # On an untrusted clock (fault clock_unsynced) nothing scheduled is planned: a
        # programme would air at the wrong hour. Once trusted, late starts follow the
        # late-start rules like after any outage.
        if self._schedule is None or not self._clock_trusted():
            return
        for occ in self._schedule.occurrences(now, now + self._lookahead):
            if not self._arbiter.knows(occ.key):
                activation = program_activation(occ.program, occ.start, occ.end, occ.key,
                                                self._media_duration)
                self._arbiter.add(activation, now, self._plays.aired(occ.key))

    def _next_boundary(self, now: float) -> float | None:
        return self._arbiter.next_boundary(now)

    # --- the tick ----------------------------------------------------------------------
    def _tick(self) -> None:
        """One round. Each step is guarded on its own: a failing step is logged and the
        others still run, and no item can stay "playing" without a playback behind it."""
        now = self._clock.now()
        for step in (self._add_occurrences, self._evaluate, self._cue_ahead, self._supervise,
                     self._drive_amplifier):
            try:
                step(now)
            except Exception:
                log.exception("control: %s failed", step.__name__)
        self._fail_orphaned_item()
        self._end_stale_items(now)
        self._settle_commands()
        if self._dirty or self._clock.monotonic() - self._snapshot_mono > 1.0:
            self._refresh_snapshot()

    def _evaluate(self, now: float) -> None:
        self._carry_out(self._arbiter.evaluate(now), now)

    def _fail_orphaned_item(self) -> None:
        """The arbiter believes an item plays that nothing carries out (an error between
        its decision and the engine): that item fails, so the arbiter moves on."""
        playing = self._arbiter.playing
        if playing is not None and playing not in self._playbacks:
            self._contain(playing[0], playing[1],
                          RuntimeError("the item is on air for the arbiter but not played"))

    def _end_stale_items(self, now: float) -> None:
        """Items of an activation the arbiter no longer has would sound with nothing to
        end them: cued ahead of a start that will not come (removed from the schedule,
        stopped, its window passed by a clock step), or begun gapless by the engine in the
        tick the window closed. Dropped, or cut as the window's end or a removal cuts."""
        for pb in [p for p in self._playbacks.values()
                   if self._arbiter.activation(p.activation.key) is None]:
            if not pb.started:
                self._drop(pb)
            elif pb.outcome is None:
                over = pb.activation.end is not None and now >= pb.activation.end
                self._stop_item(StopItem(pb.activation.key, pb.index,
                                         "completed" if over else "stopped"))

    def _refresh_snapshot(self) -> None:
        self._snapshot = self._build_snapshot()
        self._snapshot_mono = self._clock.monotonic()
        if self._dirty:
            self._dirty = False
            self._on_change()

    def _carry_out(self, actions: list[StartItem | StopItem], now: float) -> None:
        for action in actions:
            if isinstance(action, StopItem):
                if action.outcome == "preempted":
                    self._announce_preemption(action, actions)
                self._stop_item(action)
            else:
                try:
                    self._start_item(action, now)
                except Exception as exc:
                    self._contain(action.key, action.index, exc)

    def _announce_preemption(self, stopped: StopItem, actions: list[StartItem | StopItem]
                             ) -> None:
        """The ``preempted`` event of mqtt.md: what was on air, and what took over."""
        pb = self._playbacks.get((stopped.key, stopped.index))
        if pb is None or not pb.started:
            return
        body: dict[str, Any] = {"program_id": pb.activation.program_id,
                                "priority": pb.activation.priority}
        for action in actions:
            winner = self._arbiter.activation(action.key)
            if isinstance(action, StartItem) and winner is not None:
                body.update(by_program_id=winner.program_id, by_priority=winner.priority)
        self._journal.event("preempted", **body)

    def _stop_item(self, action: StopItem) -> None:
        self._drop_cued_behind(action.key, action.index)
        pb = self._playbacks.get((action.key, action.index))
        if pb is None:
            return
        pb.outcome = action.outcome
        if not pb.started:
            self._drop(pb)
            return
        self._cancel_voices(pb)
        if pb.fallback is not None and pb.fallback.voice is not None:
            self._engine.cancel(pb.fallback.voice)
        if pb.voice_ended:
            self._finish(pb)
        self._changed()

    def _drop_cued_behind(self, key: str, index: int) -> None:
        """The next item of the activation may be queued behind this one (gapless cue):
        dropped, or the engine would start it the moment this one is cut or dies."""
        for queued in [p for p in self._playbacks.values()
                       if p.activation.key == key and p.index != index and not p.started]:
            self._drop(queued)

    def _cancel_voices(self, pb: Playback) -> None:
        for voice in (pb.chime, pb.voice):
            if voice is not None and not voice.done:
                self._engine.cancel(voice)

    def _start_item(self, action: StartItem, now: float, preroll: bool = False) -> None:
        """Carry out a start; with ``preroll`` it is only cued ahead of its time, and an
        item that cannot be prepared yet is left for its real start to decide."""
        key = (action.key, action.index)
        if key in self._playbacks:
            if not preroll:
                self._changed()  # pre-cued, now on air for the arbiter: Status shows it
            return  # the engine starts it on its frame
        activation = self._arbiter.activation(action.key)
        assert activation is not None
        if preroll and not self._preparable(activation.items[action.index]):
            return
        at = action.at if action.at is not None and action.at > now else None
        if activation.priority == "emergency":
            self._amp.set(True)  # never waits for warm-up: the chime covers it
        elif at is None:
            at = self._amp.ready_at(now, self.s.warmup_s)
        at_frame = None if at is None else self._engine.frame_at(at)
        offset_s = action.offset_s
        if offset_s > 0 and at is not None:
            offset_s += at - now  # a late join sounds at ``at``: be where the program is then
            duration = activation.items[action.index].duration_s
            if duration is not None and offset_s >= duration:
                self._arbiter.item_ended(action.key, action.index, "completed")
                return  # the item is over before it could sound
        pb = Playback(activation, action.index, activation.items[action.index], offset_s)
        if action.chime:
            # The chime sounds at once; the item is prepared (TTS, decoder) while it plays.
            pb.chime = Voice(f"chime:{action.key}", BufferSource(self._chime),
                             self._gain(activation), tag=pb)
            self._drop_all(self._engine.play([pb.chime], at_frame))
        try:
            self._prepare(pb)
        except ItemUnavailable as exc:
            self._item_unavailable(activation, action.index, exc)
            return
        self._playbacks[key] = pb
        assert pb.voice is not None
        if pb.chime is not None:
            self._engine.append(pb.voice)
        else:
            self._drop_all(self._engine.play([pb.voice], at_frame))

    def _drop_all(self, voices: list[Voice]) -> None:
        for voice in voices:
            self._drop_voice(voice)

    def _cue_ahead(self, now: float) -> None:
        """Pre-roll what starts at the next boundary, and the next item of what plays."""
        boundary = self._next_boundary(now)
        playing = self._arbiter.playing
        on_air = None if playing is None else self._playbacks.get(playing)
        # A cue replaces the engine's queue: never while the item on air for the arbiter
        # still waits in it (for the amplifier's warm-up), or it would never sound.
        waiting = on_air is not None and not on_air.started
        if boundary is not None and boundary - now <= PREROLL_S and not waiting:
            for action in self._arbiter.preview(boundary):
                if isinstance(action, StartItem) and action.at == boundary:
                    self._start_item(action, now, preroll=True)
        if playing is None:
            return
        pb = self._playbacks.get(playing)
        if pb is None or pb.voice is None or pb.voice.first_frame is None or pb.item.duration_s \
                is None or pb.activation.live:
            return
        end = self._engine.time_of(pb.voice.first_frame) + pb.item.duration_s - pb.offset_s
        if end - now > PREROLL_S:
            return
        for action in self._arbiter.preview_after_item(playing[0], playing[1], end):
            if isinstance(action, StartItem) and action.key == playing[0] \
                    and (action.key, action.index) not in self._playbacks \
                    and (action.at is None or action.at - now <= PREROLL_S):
                activation = self._arbiter.activation(action.key)
                assert activation is not None
                nxt = Playback(activation, action.index, activation.items[action.index], 0.0)
                try:
                    self._prepare(nxt)
                except ItemUnavailable:
                    return  # handled when the arbiter asks for it
                self._playbacks[(action.key, action.index)] = nxt
                assert nxt.voice is not None
                if action.at is None:
                    self._engine.append(nxt.voice)  # gapless
                else:  # after a repeat gap, on its exact frame
                    self._drop_all(self._engine.play([nxt.voice],
                                                     self._engine.frame_at(action.at)))

    # --- preparing items ---------------------------------------------------------------
    def _prepare(self, pb: Playback) -> None:
        """Give ``pb`` its voice: a decoder, or the tuner. Raises ItemUnavailable."""
        item = pb.item
        if item.kind in ("fm", "line_in"):
            pb.lease = self._lease_tuner(float(item.ref)) if item.kind == "fm" \
                else self._lease_line_in()
            pb.voice = Voice(f"{item.kind}:{pb.activation.key}", pb.lease,
                             self._gain(pb.activation), tag=pb)
            return
        if item.kind == "media":
            pb.mrl, pb.sha256 = self._media_path(item.ref)
        elif item.kind != "tts":
            pb.mrl = item.ref
        self._open_decoder(pb, pb.offset_s)

    def _preparable(self, item: Item) -> bool:
        """Whether the item can be cued now: its media is in the cache, or the tuner is
        free for its station (a cue must not retune under the station still on air)."""
        if item.kind == "fm":
            return self._tuner is not None and not self._tuner.busy_elsewhere(float(item.ref))
        if item.kind == "line_in":
            return self._line_in is not None
        if item.kind != "media" or item.ref.startswith(("http://", "https://", "file://")):
            return True
        entry = self._schedule.media.get(item.ref) if self._schedule is not None else None
        return entry is not None and self._media.path(entry.sha256) is not None

    def _media_path(self, ref: str) -> tuple[str, str]:
        """(path or URL, sha256) of a media id of the schedule, or a URL."""
        if ref.startswith(("http://", "https://", "file://")):
            return ref, ""
        entry = self._schedule.media.get(ref) if self._schedule is not None else None
        path = self._media.pin(entry.sha256) if entry is not None else None
        if entry is None or path is None:
            raise ItemUnavailable("media_missing", f"media {ref} is not cached")
        return str(path), entry.sha256

    def _open_decoder(self, pb: Playback, position_s: float) -> None:
        """Give ``pb`` a voice decoding its item from ``position_s``; a text is spoken
        once the tts thread has rendered it."""
        if pb.item.kind == "tts":
            pb.stream = self._tts.speak(
                pb.item.ref, pb.item.lang,
                lambda path: self._decoders.open(str(path), position_s, 0))
        else:
            assert pb.mrl is not None
            caching = self.s.stream_caching_ms if pb.item.kind == "stream" else 0
            pb.stream = self._decoders.open(pb.mrl, position_s, caching)
        source: Any = StreamSource(pb.stream)
        if pb.item.kind == "stream":
            pb.meter = LevelMeter(source, self._clock, self.s.dead_air_dbfs)
            source = pb.meter
        if pb.voice is not None:
            pb.retired_voices.append(pb.voice)
        pb.voice = Voice(f"{pb.item.kind}:{pb.activation.key}#{pb.index}", source,
                         self._gain(pb.activation), tag=pb)

    def _lease_tuner(self, frequency_mhz: float) -> TunerLease:
        if self._tuner is None:
            raise ItemUnavailable("sdr_missing", "no FM receiver is configured (fm.backend)")
        return self._tuner.acquire(frequency_mhz)

    def _lease_line_in(self) -> LineInLease:
        if self._line_in is None:
            raise ItemUnavailable("line_in_failed", "no line input is configured "
                                  "(line_in.input)")
        return self._line_in.acquire()

    def _item_unavailable(self, activation: Activation, index: int,
                          exc: ItemUnavailable) -> None:
        log.warning("%s item %d: %s", activation.key, index, exc)
        if exc.fault == "media_missing":
            self._journal.event("media_missing", program_id=activation.program_id,
                                media_id=activation.items[index].ref)
        self._faults.raise_(exc.fault, str(exc))
        self._fail_item(activation, index)

    def _contain(self, key: str, index: int, exc: Exception) -> None:
        """An unexpected error while preparing, starting or playing an item fails that
        item, and only that item."""
        log.error("%s item %d failed: %r", key, index, exc, exc_info=exc)
        self._faults.raise_("play_failed", f"{key} item {index}: {exc!r}"[:300])
        pb = self._playbacks.pop((key, index), None)
        if pb is not None:
            self._cancel_voices(pb)
        activation = self._arbiter.activation(key)
        if pb is not None and pb.started:
            pb.outcome, pb.ended_at = "failed", self._clock.now()
            with contextlib.suppress(Exception):
                self._finish(pb)
        else:
            if pb is not None:
                with contextlib.suppress(Exception):
                    self._release(pb)
            if activation is not None:
                self._fail_item(activation, index)
                return
        self._arbiter.item_ended(key, index, "failed")
        self._ledger.item_failed(key)

    def _fail_item(self, activation: Activation, index: int) -> None:
        """An item that could not sound at all: its play report says ``failed`` (nothing
        left the card), and the arbiter moves on."""
        now = self._clock.now()
        item = activation.items[index]
        entry = None if self._schedule is None else self._schedule.media.get(item.ref)
        pb = Playback(activation, index, item, 0.0, started_at=now, ended_at=now,
                      outcome="failed", sha256=None if entry is None else entry.sha256)
        record = pb.record(self._journal.stamp, self.s.rate)
        self._plays.on_air(activation.key, index, record, now)
        self._plays.ended(record, now)
        self._journal.played(record)
        self._arbiter.item_ended(activation.key, index, "failed")
        self._ledger.item_failed(activation.key)

    def _level(self, activation: Activation) -> int:
        """The volume (0-100) the activation plays at."""
        if activation.absolute_volume and activation.volume is not None:
            return activation.volume
        return effective_volume(self.master_volume, 100 if activation.volume is None
                                else activation.volume)

    def _gain(self, activation: Activation) -> float:
        level = self._level(activation)
        if self._mixer.hardware:
            self._mixer.set_volume(level)
            return 1.0
        return volume_to_gain(level)

    # --- engine events -----------------------------------------------------------------
    def _engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, OutputFailed):
            self._faults.raise_("audio_output", event.message)
            return
        if isinstance(event, OutputRecovered):
            self._faults.clear("audio_output")
            return
        pb = event.voice.tag
        if not isinstance(pb, Playback) or self._playbacks.get(pb.key) is not pb:
            return  # not an item's, or of one already let go of
        if isinstance(event, VoiceStarted):
            if event.voice is pb.voice and pb.started_at is None:
                pb.started_at = self._engine.time_of(event.frame)
                # First: a power cut from here on is reported, and never re-aired.
                self._plays.on_air(pb.activation.key, pb.index,
                                   pb.record(self._journal.stamp, self.s.rate), pb.started_at)
                record = pb.record(self._journal.stamp, self.s.rate)
                for not_an_event_field in ("id", "ended_at", "played_s", "outcome"):
                    del record[not_an_event_field]
                self._journal.event("play_started", **record)
                if pb.item.kind == "line_in":
                    self._journal.event("line_in_on", **_line_in_fields(pb))
                self._changed()
            return
        assert isinstance(event, VoiceEnded)
        if event.voice in pb.retired_voices and event.cut:
            pb.played_frames += event.voice.frames_played  # cut after it was replaced
            return
        if event.voice is not pb.voice:
            return
        pb.played_frames += event.voice.frames_played
        pb.ended_at = self._engine.time_of(event.frame)
        if not event.cut and self._recover_decoder(pb):
            return
        if event.cut and pb.outcome is None and not pb.voice_ended \
                and self._arbiter.playing != pb.key:
            # Replaced in the engine by a start the arbiter decided, though it never told
            # to stop this item (cued on its frame after a repeat gap, the arbiter had not
            # started it yet): preempted, so that it restarts when it wins again.
            pb.outcome = "preempted"
        pb.voice_ended = True
        if not event.cut:
            if pb.item.kind == "stream":
                # A stream that ended is dead air, not an outcome: supervision decides
                # (fallback, return), and it leaves items that have an outcome alone.
                return
            failed = pb.played_frames == 0 or (pb.stream is not None
                                               and pb.stream.state == "error")
            pb.outcome = "failed" if failed else "completed"
            self._arbiter.item_ended(pb.activation.key, pb.index, pb.outcome, pb.ended_at)
            if failed:
                self._ledger.item_failed(pb.activation.key)
            if isinstance(pb.stream, SpokenStream) and pb.stream.render_failed:
                self._faults.raise_("tts_failed", pb.stream.message)
            elif pb.item.kind == "tts" and not failed:
                self._faults.clear("tts_failed")
        if pb.outcome is not None:
            self._finish(pb)

    def _recover_decoder(self, pb: Playback) -> bool:
        """A worker that crashed or was killed mid-item: restart at the position reached."""
        stream = pb.stream
        if stream is None or stream.state not in ("crashed", "killed") or pb.item.kind \
                == "stream" or pb.restarts >= MAX_DECODER_RESTARTS:
            return False
        pb.restarts += 1
        position = pb.offset_s + pb.played_frames / self.s.rate
        log.warning("decoder of %s %s (%s); restarting at %.1f s", pb.activation.key,
                    stream.state, stream.message, position)
        self._faults.raise_("decoder_crashed" if stream.state == "crashed" else "decoder_hung",
                            f"decoder for {pb.item.ref} {stream.state}; restarted at "
                            f"{position:.1f} s")
        stream.close()
        self._drop_cued_behind(pb.activation.key, pb.index)
        self._open_decoder(pb, position)
        assert pb.voice is not None
        self._drop_all(self._engine.play([pb.voice]))
        return True

    def _finish(self, pb: Playback) -> None:
        """Write the proof of play and let go of the item."""
        self._playbacks.pop(pb.key, None)
        if pb.fallback is not None:
            self._finish_fallback(pb)
        if pb.started_at is not None:
            if not _relayed_station(pb) or (pb.outcome == "completed" and not pb.played_frames):
                pb.outcome = "failed"  # what sounded says so, not the end of its window
            record = pb.record(self._journal.stamp, self.s.rate)
            self._journal.played(record)
            self._plays.ended(record, pb.ended_at if pb.ended_at is not None
                              else self._clock.now())
            if pb.item.kind == "line_in":
                self._journal.event("line_in_off", **_line_in_fields(pb),
                                    played_s=record["played_s"], outcome=record["outcome"])
        self._release(pb)
        self._changed()

    def _release(self, pb: Playback) -> None:
        self._finish_fallback(pb)  # a stop() while the fallback relays: reported, released
        if pb.stream is not None:
            pb.stream.close()
        if pb.sha256:
            self._media.unpin(pb.sha256)
        if pb.lease is not None:
            pb.lease.release()

    def _drop(self, pb: Playback) -> None:
        """Let go of an item before it started: out of the engine too (it may be cued, or
        its first sample may be on its way), or it would sound without a playback."""
        self._playbacks.pop(pb.key, None)
        self._cancel_voices(pb)
        self._release(pb)

    def _drop_voice(self, voice: Voice) -> None:
        pb = voice.tag
        if isinstance(pb, Playback) and not pb.started and voice is pb.voice:
            self._drop(pb)

    # --- supervision -------------------------------------------------------------------
    def _supervise(self, now: float) -> None:
        self._check_dead_air(now)
        self._supervise_decoders(now)

    def _check_dead_air(self, now: float) -> None:
        """Something is on air for the arbiter, yet the card has received only digital
        silence for dead_air_s (at a volume above zero): the horns are silent."""
        playing = self._arbiter.playing
        pb = None if playing is None else self._playbacks.get(playing)
        silent_s = 0.0
        if pb is not None and pb.started_at is not None and self._level(pb.activation) > 0:
            last_sound = self._engine.time_of(self._engine.last_sound_frame)
            silent_s = now - max(last_sound, pb.started_at)
            if isinstance(pb.lease, LineInLease) and pb.activation.key != self._vox_key:
                # A line input quieter than dead_air_dbfs (a dead microphone hisses); VOX
                # ends its own relay when the speaker stops.
                silent_s = max(silent_s, pb.lease.quiet_for())
        if silent_s > self.s.dead_air_s:
            self._faults.raise_("dead_air", f"{pb.activation.program_id if pb else '?'}: "
                                f"the card has received silence for {silent_s:.0f} s")
        else:
            self._faults.clear("dead_air")

    def _supervise_decoders(self, now: float) -> None:
        for pb in list(self._playbacks.values()):
            stream = pb.stream
            if pb.item.kind == "stream":
                self._supervise_stream(pb, now)
            elif stream is not None and pb.started and not stream.finished:
                if stream.silent_for() > self.s.decoder_hang_s and stream.state != "ended":
                    log.warning("decoder of %s silent for %.1f s: killing it",
                                pb.activation.key, stream.silent_for())
                    stream.close()
                elif stream.pcm_bytes and pb.restarts and stream.silent_for() < 1.0:
                    self._faults.clear("decoder_hung")
                    self._faults.clear("decoder_crashed")

    def _supervise_stream(self, pb: Playback, now: float) -> None:
        if not pb.started or pb.meter is None or pb.stream is None or pb.outcome is not None:
            return  # not on air yet, or being cut: no fallback, which would take the engine
        if pb.fallback is None:
            if pb.stream.finished or pb.meter.quiet_for() > self.s.dead_air_s:
                self._stream_died(pb)
            return
        # Off air: keep the probe live (what it buffered is the past) and measure it.
        pb.meter.read(pb.stream.buffered_bytes())
        if pb.meter.heard and pb.meter.quiet_for() < PROBE_LOUD_S:
            self._stream_returned(pb)
        elif now - self._last_stream_retry > STREAM_RETRY_S:
            self._last_stream_retry = now
            pb.stream.close()
            self._open_decoder(pb, 0.0)  # a fresh connection, measured off air

    def _stream_died(self, pb: Playback) -> None:
        assert pb.stream is not None and pb.meter is not None
        why = "ended" if pb.stream.finished else f"silent for {pb.meter.quiet_for():.0f} s"
        fallback_mhz = self._schedule.fm_fallback_mhz if self._schedule is not None else None
        fb = Playback(pb.activation, pb.index, Item("fm", str(fallback_mhz), None), 0.0)
        pb.fallback = fb
        self._last_stream_retry = self._clock.now()
        if fallback_mhz is not None and self._tuner is not None:
            # Tagged with the stream's playback, whose events ignore it: the fallback is
            # not an item of its own (it shares the stream's key) and _finish_fallback
            # writes its record.
            fb.lease = self._tuner.acquire(fallback_mhz)
            fb.voice = Voice(f"fallback:{pb.activation.key}", fb.lease,
                             self._gain(pb.activation), tag=pb)
            self._drop_all(self._engine.play([fb.voice]))
        elif pb.voice is not None:
            self._engine.cancel(pb.voice)
        pb.voice_ended = True  # nothing of the stream is on air now
        pb.stream.close()
        self._open_decoder(pb, 0.0)  # a fresh connection, measured off air
        self._changed()
        self._refresh_snapshot()  # Status shows the fallback before the fault is seen
        self._faults.raise_("stream_unavailable", f"{pb.item.ref}: {why}")

    def _stream_returned(self, pb: Playback) -> None:
        """The stream carries sound again: back on air, live, instead of the fallback."""
        assert pb.voice is not None
        self._finish_fallback(pb)
        pb.voice_ended = False
        self._drop_all(self._engine.play([pb.voice]))
        self._changed()
        self._refresh_snapshot()  # Status shows the stream again before the fault clears
        self._faults.clear("stream_unavailable")

    def _finish_fallback(self, pb: Playback) -> None:
        fb = pb.fallback
        pb.fallback = None
        if fb is None or fb.voice is None:
            return
        self._engine.cancel(fb.voice)
        fb.played_frames = fb.voice.frames_played
        if fb.voice.first_frame is not None:
            fb.started_at = self._engine.time_of(fb.voice.first_frame)
            fb.ended_at = self._clock.now()
            fb.outcome = "completed" if _relayed_station(fb) else "failed"
            self._journal.played(fb.record(self._journal.stamp, self.s.rate))
        if fb.lease is not None:
            fb.lease.release()

    # --- amplifier ---------------------------------------------------------------------
    def _drive_amplifier(self, now: float) -> None:
        wanted = self._amp_policy.wanted(
            now, self._next_boundary(now),
            busy=bool(self._playbacks) or self._arbiter.playing is not None,
            idle_since=self._idle_since(),
            on_since=self._amp.on_since)
        if wanted is not None:
            self._amp.set(wanted)

    # --- commands ----------------------------------------------------------------------
    def _execute(self, cmd: Command) -> None:
        now = self._clock.now()
        args = cmd.args
        if cmd.type in ("emergency", "play_now", "fm_relay", "line_in"):
            activation = command_activation(
                cmd, now, self.s.emergency_volume, self._media_duration,
                lambda media_id: self._preparable(Item("media", media_id)))
            self._amp_policy.forced = None  # forced power lasts until the next play
            self._ledger.open(activation.key, cmd)
            self._open_commands.opened(cmd)
            self._arbiter.add(activation, now)
            self._carry_out(self._arbiter.evaluate(now), now)
            return
        if cmd.type == "stop":
            self._arbiter.stop(args.get("priority"), now)
            self._carry_out(self._arbiter.evaluate(now), now)
        elif cmd.type == "set_volume":
            self.set_master_volume(int(args["volume"]))
        elif cmd.type == "sync_now":
            self._sync_now()
        elif cmd.type == "amplifier":
            self._amp_policy.forced = bool(args["on"])
            self._amp.set(self._amp_policy.forced)
        self._ack(cmd, "completed")
        self._changed()

    def _vox(self, on: bool) -> None:
        """VOX on: the line input goes on air like a command at ``line_in.priority`` (the
        chime and the amplifier's warm-up as usual), unless it is on air already. VOX off:
        its relay ends (with what it relayed), or never starts."""
        now = self._clock.now()
        if on:
            busy = any(pb.item.kind == "line_in" and pb.started
                       for pb in self._playbacks.values())
            if self._vox_key is None and not busy:
                activation = vox_activation(now, self.s.vox_priority, self.s.vox_chime)
                self._vox_key = activation.key
                self._amp_policy.forced = None
                self._arbiter.add(activation, now)
        elif self._vox_key is not None:
            key, self._vox_key = self._vox_key, None
            pb = self._playbacks.get((key, 0))
            if pb is not None and pb.started and isinstance(pb.lease, LineInLease):
                pb.lease.end()  # the engine ends the voice: the item completes
                return
            if pb is not None:
                self._cancel_voices(pb)
            self._carry_out(self._arbiter.remove(key), now)
        self._carry_out(self._arbiter.evaluate(now), now)

    def _reconfigure(self, settings: ControlSettings) -> None:
        """New settings from a config reload; volumes follow at once, without a gap."""
        old, self.s = self.s, settings
        self._arbiter.late_start_grace_s = settings.late_start_grace_s
        self._amp_policy.warmup_s = settings.warmup_s
        self._amp_policy.idle_off_s = settings.idle_off_s
        self._lookahead = max(settings.warmup_s, PREROLL_S) + 0.5
        if settings.default_volume != old.default_volume and self._store.get(VOLUME_KEY) is None:
            self.master_volume = settings.default_volume
        self._regain()

    def set_master_volume(self, volume: int) -> None:
        self.master_volume = volume
        self._store.put(VOLUME_KEY, volume)
        self._regain()

    def _regain(self) -> None:
        """Apply the current volumes to what plays (the engine ramps the change)."""
        for pb in self._playbacks.values():
            for voice in (pb.voice, pb.chime):
                if voice is not None:
                    voice.gain = self._gain(pb.activation)
        self._changed()

    def _settle_commands(self) -> None:
        """Ack completed/failed for every command whose activation is over."""
        live = self._arbiter.keys() | {k for k, _ in self._playbacks}
        for settled in self._ledger.settle(live):
            self._ack(settled.command, settled.status, settled.reason)

    def _ack(self, cmd: Command, status: str, reason: str | None = None) -> None:
        self._journal.ack(cmd.id, status, reason)
        self._count_command(cmd.type, status)
        self._open_commands.ended(cmd)

    # --- status and crash safety -------------------------------------------------------
    def _changed(self) -> None:
        self._dirty = True

    def _report_interrupted_onair(self) -> None:
        """Plays a crash or power cut left on air: reported ``stopped`` (with the id they
        had when they started, so a duplicate is de-duplicated by the source)."""
        for play in self._plays.cut_by_crash():
            record = {**play.record, "outcome": "stopped"}
            self._journal.played(record)
            self._plays.interrupted(record)

    def snapshot(self) -> dict[str, Any]:
        """The latest ``playing``/``volume``/``amplifier``/``next`` view; safe from any
        thread (built by the control thread)."""
        return self._snapshot

    def _build_snapshot(self) -> dict[str, Any]:
        playing: dict[str, Any] | None = None
        key = self._arbiter.playing
        pb = self._playbacks.get(key) if key is not None else None
        if pb is not None and pb.started_at is not None:
            fallback = pb.fallback
            on_air = fallback if fallback is not None and fallback.voice is not None else pb
            playing = {"source": on_air.item.kind, "priority": pb.activation.priority,
                       "program_id": pb.activation.program_id, "title": pb.activation.title,
                       "started_at": self._journal.stamp(pb.started_at),
                       **item_ref(on_air.item)}
        upcoming: list[dict[str, Any]] = []
        if self._schedule is not None:
            now = self._clock.now()
            for occ in self._schedule.occurrences(now, now + 86400.0):
                if occ.start > now and len(upcoming) < 5:
                    upcoming.append({"program_id": occ.program.id, "title": occ.program.title,
                                     "priority": occ.program.priority,
                                     "start": self._journal.stamp(occ.start)})
        return {"playing": playing, "volume": self.master_volume,
                "amplifier": "on" if self._amp.is_on else "off", "next": upcoming}


def _line_in_fields(pb: Playback) -> dict[str, Any]:
    """What the line_in_on/line_in_off events say about the relay."""
    key = pb.activation.key
    trigger = "vox" if key.startswith(VOX_PREFIX) else "command" if key.startswith("cmd:") \
        else "schedule"
    return {"program_id": pb.activation.program_id, "priority": pb.activation.priority,
            "trigger": trigger}


def _relayed_station(pb: Playback) -> bool:
    """False for a relay that never carried its source's own sound (FM with no dongle or
    squelched all along, a stream silent or dead from its start): its proof of play must
    not claim it was on air."""
    if pb.lease is not None:
        return pb.lease.carried_sound
    if pb.item.kind == "stream":
        return pb.meter is not None and pb.meter.heard
    return True
