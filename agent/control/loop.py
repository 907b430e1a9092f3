"""The control loop: the deciding thread ("control") and the order of its turn.

Other threads never touch its state: they post facts (a schedule was applied, a command
arrived, the engine started or ended a voice, VOX heard someone). Each turn applies the
facts in order, then ticks: plan the schedule's occurrences, let the pure Arbiter decide,
have the :class:`~agent.control.executor.Executor` carry that out and cue what comes next,
let the :class:`~agent.control.supervision.Supervisor` watch what plays, drive the
amplifier, and have the :class:`~agent.control.command_handling.CommandHandler` ack the
commands that ended. Nothing in a turn waits for a process, a file or a receiver;
``control_tick_seconds`` times every turn.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from agent.control.activations import program_activation, vox_activation
from agent.control.amplifier import AmplifierPolicy, AmplifierSwitch
from agent.control.command_handling import CommandHandler
from agent.control.executor import PREROLL_S, Executor
from agent.control.playback import Playback
from agent.control.preparation import FmTunerLike, LineInputLike, MediaLookup, Preparer
from agent.control.state import (
    CommandReceived,
    ControlSettings,
    ControlState,
    EngineReported,
    Fact,
    Reconfigured,
    ScheduleApplied,
    VoxChanged,
    status_view,
)
from agent.control.supervision import Supervisor
from agent.core.arbiter import Arbiter
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.core.schedule import Schedule, TtsSource
from agent.playout.decoder import Decoders
from agent.playout.line_in import LineInLease
from agent.playout.tts import Speech
from agent.playout.voice import (
    Engine,
    EngineEvent,
    OutputRecovered,
    VoiceEnded,
    VoiceStarted,
)
from agent.state.journal import Journal
from agent.state.plays import PlayJournal
from agent.state.store import StateStore
from drivers.amplifier.base import Amplifier
from drivers.mixer.base import Mixer
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

VOLUME_KEY = "audio.master_volume"
BUSY_WAIT_S = 0.05  # the deciding thread's longest wait while anything starts or is due
# ... while everything in play has started and nothing starts soon: what the turn then
# watches (dead air, hung decoders, the next item's pre-roll PREROLL_S ahead) is counted in
# seconds, what cannot wait (an engine event, a command) wakes the thread itself, and the
# end of a program's window is waited for exactly.
PLAYING_WAIT_S = 0.25
IDLE_WAIT_S = 0.5
CLOCK_STEP_S = 1.0  # wall time moving this much more or less than monotonic time is a step


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
        self._state = ControlState(
            settings, Arbiter(late_start_grace_s=settings.late_start_grace_s),
            master_volume=int(store.get(VOLUME_KEY, settings.default_volume)))
        self._clock = clock
        self._engine = engine
        self._media = media
        self._tts = tts
        self._amp = AmplifierSwitch(amplifier, faults, clock, self._state.changed)
        self._journal = journal
        self._plays = plays
        self._faults = faults
        self._store = store
        self._on_change = on_change
        self._clock_trusted = clock_trusted
        self._observe_tick = observe_tick  # seconds one turn of the deciding thread took
        self._preparer = Preparer(
            self._state, clock=clock, decoders=decoders, media=media, tts=tts, tuner=tuner,
            line_in=line_in, mixer=mixer)
        self._executor = Executor(
            self._state, self._preparer, clock=clock, engine=engine, media=media,
            amp=self._amp, chime_pcm=chime_pcm, journal=journal, plays=plays, faults=faults)
        self._supervisor = Supervisor(
            self._state, self._executor, self._preparer, clock=clock, engine=engine,
            tuner=tuner, journal=journal, plays=plays, faults=faults,
            refresh_snapshot=self._refresh_snapshot)
        self._facts: queue.Queue[Fact] = queue.Queue()
        self._amp_policy = AmplifierPolicy(settings.warmup_s, settings.idle_off_s)
        self._commands = CommandHandler(
            self._state, self._executor, self._preparer, clock=clock, amp=self._amp,
            amp_policy=self._amp_policy, journal=journal, store=store,
            media_duration=self._media_duration, set_volume=self.set_master_volume,
            sync_now=sync_now, count_command=count_command)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick_mono = clock.monotonic()
        self._wall_offset = clock.now() - clock.monotonic()  # moves only when the clock steps
        self._lookahead = max(settings.warmup_s, PREROLL_S) + 0.5
        self._snapshot = self._build_snapshot()
        self._snapshot_mono = clock.monotonic()

    def post(self, fact: Fact) -> None:
        self._facts.put(fact)

    def on_engine_event(self, event: EngineEvent) -> None:
        self._facts.put(EngineReported(event))

    def start(self) -> None:
        self.recover()
        self._thread = NamedThread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """What a start does before the first tick: report what a crash left on air."""
        self._plays.prune(self._clock.now())
        self._report_interrupted_onair()
        self._commands.fail_cut_by_restart()
        self._amp.set(False)

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._facts.put(EngineReported(OutputRecovered()))  # wake the loop
        if self._thread is not None:
            self._thread.join(timeout)
        now = self._clock.now()
        for pb in list(self._state.playbacks.values()):
            if pb.started:
                # Reported stopped; journaled as interrupted, so that the next start
                # resumes it by the late-start rules, as after a power cut.
                pb.outcome = "stopped"
                pb.ended_at = now
                record = pb.record(self._journal.stamp, self._state.settings.rate)
                self._journal.played(record)
                self._plays.interrupted(record)
            self._executor.release(pb)
        self._state.playbacks.clear()

    @property
    def master_volume(self) -> int:
        return self._state.master_volume

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step(self.wait_s())

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
            with self._store.batch():  # the turn's records: durable at its end, together
                self._turn(fact)
        except OSError:
            log.exception("control: the turn's records could not be made durable")
        self.last_tick_mono = self._clock.monotonic()
        self._observe_tick(self.last_tick_mono - began)

    def _turn(self, fact: Fact | None) -> None:
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

    def wait_s(self) -> float:
        """How long the deciding thread may wait for a fact before its next turn."""
        now = self._clock.now()
        if self._state.arbiter.next_boundary(now) is not None \
                or any(not pb.started for pb in self._state.playbacks.values()):
            return BUSY_WAIT_S
        if self._state.playbacks:
            end = self._state.arbiter.next_window_end(now)
            return PLAYING_WAIT_S if end is None else min(PLAYING_WAIT_S, end - now)
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
                self._commands.execute(fact.command)
            elif isinstance(fact, Reconfigured):
                self._reconfigure(fact.settings)
            elif isinstance(fact, VoxChanged):
                self._vox(fact.on)
            else:
                self._supervisor.on_engine_event(fact.event)
        except Exception as exc:
            self._fact_failed(fact, exc)

    def _fact_failed(self, fact: Fact, exc: Exception) -> None:
        """A fact that could not be applied fails what it was about: its command, or the
        item its engine event belongs to."""
        log.error("control: %s could not be applied: %r", type(fact).__name__, exc,
                  exc_info=exc)
        if isinstance(fact, CommandReceived):
            self._commands.could_not_execute(fact.command, exc)
        elif isinstance(fact, EngineReported) and isinstance(fact.event, VoiceStarted
                                                              | VoiceEnded):
            pb = fact.event.voice.tag
            if isinstance(pb, Playback):
                self._executor.contain(pb.activation.key, pb.index, exc)

    def _apply_schedule(self, schedule: Schedule) -> None:
        old = self._state.schedule
        self._state.schedule = schedule
        self._state.changed()  # the next programs shown in Status change with it
        for program in schedule.programs:
            if isinstance(program.source, TtsSource):
                self._tts.render_ahead(program.source.text, program.source.lang)
        if old is None:
            return
        now = self._clock.now()
        wanted = {o.key for o in schedule.occurrences(now, now + self._lookahead)}
        for key in self._state.arbiter.keys() - wanted:
            if key not in self._state.ledger:
                self._executor.carry_out(self._state.arbiter.remove(key), now)

    def _media_duration(self, media_id: str) -> float | None:
        """The entry's duration_s, or else the length read from the cached file."""
        entry = self._state.media_entry(media_id)
        if entry is None:
            return None
        return entry.duration_s if entry.duration_s is not None \
            else self._media.duration_s(entry.sha256)

    def _add_occurrences(self, now: float) -> None:
        # On an untrusted clock (fault clock_unsynced) nothing scheduled is planned: a
        # programme would air at the wrong hour. Once trusted, late starts follow the
        # late-start rules like after any outage.
        if self._state.schedule is None or not self._clock_trusted():
            return
        for occ in self._state.schedule.occurrences(now, now + self._lookahead):
            if not self._state.arbiter.knows(occ.key):
                activation = program_activation(occ.program, occ.start, occ.end, occ.key,
                                                self._media_duration)
                self._state.arbiter.add(activation, now, self._plays.aired(occ.key))

    def _tick(self) -> None:
        """One round. Each step is guarded on its own: a failing step is logged and the
        others still run, and no item can stay "playing" without a playback behind it."""
        now = self._clock.now()
        offset = now - self._clock.monotonic()
        if abs(offset - self._wall_offset) > CLOCK_STEP_S:
            self._clock_stepped(offset - self._wall_offset, now)
        self._wall_offset = offset
        for step in (self._add_occurrences, self._evaluate, self._executor.cue_ahead,
                     self._supervisor.supervise, self._drive_amplifier):
            try:
                step(now)
            except Exception:
                log.exception("control: %s failed", step.__name__)
        self._supervisor.fail_orphaned_item()
        self._supervisor.end_stale_items(now)
        self._commands.settle()
        if self._state.dirty or self._clock.monotonic() - self._snapshot_mono > 1.0:
            self._refresh_snapshot()

    def _clock_stepped(self, seconds: float, now: float) -> None:
        """Re-plan after a step of the wall clock (source-api.md): what plays goes on,
        what was cued for a wall-clock frame is cued again for the new one."""
        log.warning("the wall clock stepped by %+.1f s: re-planning", seconds)
        arbiter = self._state.arbiter
        known = arbiter.keys()
        commands = {key for key in known
                    if key in self._state.ledger or key == self._state.vox_key}
        arbiter.clock_stepped(seconds, now - seconds, commands)
        for pb in [p for p in self._state.playbacks.values() if not p.started]:
            self._executor.drop(pb)
            if arbiter.playing == pb.key:  # to start once more, on the new clock's frame
                arbiter.item_ended(pb.activation.key, pb.index, "preempted")

    def _evaluate(self, now: float) -> None:
        self._executor.carry_out(self._state.arbiter.evaluate(now), now)

    def _refresh_snapshot(self) -> None:
        self._snapshot = self._build_snapshot()
        self._snapshot_mono = self._clock.monotonic()
        if self._state.dirty:
            self._state.dirty = False
            self._on_change()

    def _drive_amplifier(self, now: float) -> None:
        wanted = self._amp_policy.wanted(
            now, self._state.arbiter.next_boundary(now),
            busy=bool(self._state.playbacks) or self._state.arbiter.playing is not None,
            idle_since=self._idle_since(),
            on_since=self._amp.on_since)
        if wanted is not None:
            self._amp.set(wanted)

    def _vox(self, on: bool) -> None:
        """VOX on: the line input goes on air like a command at ``line_in.priority`` (the
        chime and the amplifier's warm-up as usual), unless it is on air already. VOX off:
        its relay ends (with what it relayed), or never starts."""
        now = self._clock.now()
        if on:
            busy = any(pb.item.kind == "line_in" and pb.started
                       for pb in self._state.playbacks.values())
            if self._state.vox_key is None and not busy:
                settings = self._state.settings
                activation = vox_activation(now, settings.vox_priority, settings.vox_chime)
                self._state.vox_key = activation.key
                self._amp_policy.forced = None
                self._state.arbiter.add(activation, now)
        elif self._state.vox_key is not None:
            key, self._state.vox_key = self._state.vox_key, None
            pb = self._state.playbacks.get((key, 0))
            if pb is not None and pb.started and isinstance(pb.lease, LineInLease):
                pb.lease.end()  # the engine ends the voice: the item completes
                return
            if pb is not None:
                self._executor.cancel_voices(pb)
            self._executor.carry_out(self._state.arbiter.remove(key), now)
        self._executor.carry_out(self._state.arbiter.evaluate(now), now)

    def _reconfigure(self, settings: ControlSettings) -> None:
        """New settings from a config reload; volumes follow at once, without a gap."""
        old, self._state.settings = self._state.settings, settings
        self._state.arbiter.late_start_grace_s = settings.late_start_grace_s
        self._amp_policy.warmup_s = settings.warmup_s
        self._amp_policy.idle_off_s = settings.idle_off_s
        self._lookahead = max(settings.warmup_s, PREROLL_S) + 0.5
        if settings.default_volume != old.default_volume and self._store.get(VOLUME_KEY) is None:
            self._state.master_volume = settings.default_volume
        self._executor.regain()

    def set_master_volume(self, volume: int) -> None:
        self._state.master_volume = volume
        self._store.put(VOLUME_KEY, volume)
        self._executor.regain()

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
        return status_view(self._state, self._clock.now(), self._journal.stamp,
                           self._amp.is_on)
