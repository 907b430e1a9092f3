"""The supervisor: what the engine and the decoders report back, and what the control
thread watches at every tick (dead air, hung decoders, dead streams and their FM
fallback, items the arbiter and the executor no longer agree on).

Its decisions are facts for the arbiter (an item ended, with its outcome) and faults for
the operators; carrying them out is the executor's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.control.dropouts import DropoutWatch
from agent.control.executor import Executor
from agent.control.playback import Playback, line_in_fields
from agent.control.preparation import FmTunerLike, Preparer
from agent.control.state import ControlState
from agent.core.arbiter import Item, StopItem
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.playout.line_in import LineInLease
from agent.playout.tts import SpokenStream
from agent.playout.voice import (
    Engine,
    EngineEvent,
    OutputFailed,
    OutputRecovered,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from agent.state.journal import Journal
from agent.state.plays import PlayJournal

log = logging.getLogger(__name__)

STREAM_RETRY_S = 5.0
PROBE_LOUD_S = 0.5  # a dead stream's probe counts as back when it was loud this recently
MAX_DECODER_RESTARTS = 3


class Supervisor:
    def __init__(self, state: ControlState, executor: Executor, preparer: Preparer, *,
                 clock: Clock, engine: Engine, tuner: FmTunerLike | None, journal: Journal,
                 plays: PlayJournal, faults: FaultRegistry,
                 refresh_snapshot: Callable[[], None]) -> None:
        self._state = state
        self._executor = executor
        self._preparer = preparer
        self._clock = clock
        self._engine = engine
        self._tuner = tuner
        self._journal = journal
        self._plays = plays
        self._faults = faults
        self._refresh_snapshot = refresh_snapshot
        self._last_stream_retry = 0.0
        self._dropouts = DropoutWatch()

    def on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, OutputFailed):
            self._faults.raise_("audio_output", event.message)
            return
        if isinstance(event, OutputRecovered):
            self._faults.clear("audio_output")
            return
        pb = event.voice.tag
        if not isinstance(pb, Playback) or self._state.playbacks.get(pb.key) is not pb:
            return  # not an item's, or of one already let go of
        if isinstance(event, VoiceStarted):
            if event.voice is pb.voice and pb.started_at is None:
                pb.started_at = self._engine.time_of(event.frame)
                if pb.meter is not None:
                    pb.meter.went_on_air()
                # First: a power cut from here on is reported, and never re-aired; the
                # event goes in the same transaction, or a cut between two writes would
                # leave a play reported that was never said to start.
                record = pb.record(self._journal.stamp, self._state.settings.rate)
                started_at, key, index = pb.started_at, pb.activation.key, pb.index
                fields = {k: v for k, v in record.items()
                          if k not in ("id", "ended_at", "played_s", "outcome")}
                self._journal.event_with(
                    lambda db: self._plays.write_on_air(db, key, index, record, started_at),
                    "play_started", **fields)
                if pb.item.kind == "line_in":
                    self._journal.event("line_in_on", **line_in_fields(pb))
                self._state.changed()
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
                and self._state.arbiter.playing != pb.key:
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
            self._state.arbiter.item_ended(pb.activation.key, pb.index, pb.outcome, pb.ended_at)
            if failed:
                self._state.ledger.item_failed(pb.activation.key)
            if isinstance(pb.stream, SpokenStream) and pb.stream.render_failed:
                self._faults.raise_("tts_failed", pb.stream.message)
            elif pb.item.kind == "tts" and not failed:
                self._faults.clear("tts_failed")
        if pb.outcome is not None:
            self._executor.finish(pb)

    def _recover_decoder(self, pb: Playback) -> bool:
        """A worker that crashed or was killed mid-item: restart at the position reached."""
        stream = pb.stream
        if stream is None or stream.state not in ("crashed", "killed") or pb.item.kind \
                == "stream" or pb.restarts >= MAX_DECODER_RESTARTS:
            return False
        pb.restarts += 1
        position = pb.offset_s + pb.played_frames / self._state.settings.rate
        log.warning("decoder of %s %s (%s); restarting at %.1f s", pb.activation.key,
                    stream.state, stream.message, position)
        self._faults.raise_("decoder_crashed" if stream.state == "crashed" else "decoder_hung",
                            f"decoder for {pb.item.ref} {stream.state}; restarted at "
                            f"{position:.1f} s")
        stream.close()
        self._executor.drop_cued_behind(pb.activation.key, pb.index)
        self._preparer.open_decoder(pb, position)
        assert pb.voice is not None
        self._executor.drop_all(self._engine.play([pb.voice]))
        return True

    def supervise(self, now: float) -> None:
        self._check_dead_air(now)
        self._check_dropouts(now)
        self._supervise_decoders(now)

    def _check_dropouts(self, now: float) -> None:
        underrun_s = self._engine.card_underrun_frames / self._state.settings.rate
        message = self._dropouts.update(now, underrun_s)
        if message is None:
            self._faults.clear("audio_dropouts")
        else:
            self._faults.raise_("audio_dropouts", message)

    def _check_dead_air(self, now: float) -> None:
        """Something is on air for the arbiter, yet the card has received only digital
        silence for dead_air_s (at a volume above zero): the horns are silent."""
        playing = self._state.arbiter.playing
        pb = None if playing is None else self._state.playbacks.get(playing)
        silent_s = 0.0
        if pb is not None and pb.started_at is not None and self._preparer.level(pb.activation) > 0:
            last_sound = self._engine.time_of(self._engine.last_sound_frame)
            silent_s = now - max(last_sound, pb.started_at)
            if isinstance(pb.lease, LineInLease) and pb.activation.key != self._state.vox_key:
                # A line input quieter than dead_air_dbfs (a dead microphone hisses); VOX
                # ends its own relay when the speaker stops.
                silent_s = max(silent_s, pb.lease.quiet_for())
        if silent_s > self._state.settings.dead_air_s:
            self._faults.raise_("dead_air", f"{pb.activation.program_id if pb else '?'}: "
                                f"the card has received silence for {silent_s:.0f} s")
        else:
            self._faults.clear("dead_air")

    def _supervise_decoders(self, now: float) -> None:
        for pb in list(self._state.playbacks.values()):
            stream = pb.stream
            if pb.item.kind == "stream":
                self._supervise_stream(pb, now)
            elif stream is not None and pb.started and not stream.finished:
                hung = stream.silent_for() > self._state.settings.decoder_hang_s
                if hung and stream.state != "ended":
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
            if pb.stream.finished or pb.meter.quiet_for() > self._state.settings.dead_air_s:
                self._stream_died(pb)
            return
        # Off air: keep the probe live (what it buffered is the past) and measure it.
        pb.meter.read(pb.stream.buffered_bytes())
        if pb.meter.heard and pb.meter.quiet_for() < PROBE_LOUD_S:
            self._stream_returned(pb)
        elif self._clock.monotonic() - self._last_stream_retry > STREAM_RETRY_S:
            self._last_stream_retry = self._clock.monotonic()
            pb.stream.close()
            self._preparer.open_decoder(pb, 0.0)  # a fresh connection, measured off air

    def _stream_died(self, pb: Playback) -> None:
        assert pb.stream is not None and pb.meter is not None
        why = "ended" if pb.stream.finished else f"silent for {pb.meter.quiet_for():.0f} s"
        schedule = self._state.schedule
        fallback_mhz = schedule.fm_fallback_mhz if schedule is not None else None
        fb = Playback(pb.activation, pb.index, Item("fm", str(fallback_mhz), None), 0.0)
        pb.fallback = fb
        self._last_stream_retry = self._clock.monotonic()
        if fallback_mhz is not None and self._tuner is not None:
            # Tagged with the stream's playback, whose events ignore it: the fallback is
            # not an item of its own (it shares the stream's key) and _finish_fallback
            # writes its record.
            fb.lease = self._tuner.acquire(fallback_mhz)
            fb.voice = Voice(f"fallback:{pb.activation.key}", fb.lease,
                             self._preparer.gain(pb.activation), tag=pb)
            self._executor.drop_all(self._engine.play([fb.voice]))
        elif pb.voice is not None:
            self._engine.cancel(pb.voice)
        pb.voice_ended = True  # nothing of the stream is on air now
        pb.stream.close()
        self._preparer.open_decoder(pb, 0.0)  # a fresh connection, measured off air
        self._state.changed()
        self._refresh_snapshot()  # Status shows the fallback before the fault is seen
        self._faults.raise_("stream_unavailable", f"{pb.item.ref}: {why}")

    def _stream_returned(self, pb: Playback) -> None:
        """The stream carries sound again: back on air, live, instead of the fallback."""
        assert pb.voice is not None
        self._executor.finish_fallback(pb)
        pb.voice_ended = False
        self._executor.drop_all(self._engine.play([pb.voice]))
        self._state.changed()
        self._refresh_snapshot()  # Status shows the stream again before the fault clears
        self._faults.clear("stream_unavailable")

    def fail_orphaned_item(self) -> None:
        """The arbiter believes an item plays that nothing carries out (an error between
        its decision and the engine): that item fails, so the arbiter moves on."""
        playing = self._state.arbiter.playing
        if playing is not None and playing not in self._state.playbacks:
            self._executor.contain(playing[0], playing[1],
                          RuntimeError("the item is on air for the arbiter but not played"))

    def end_stale_items(self, now: float) -> None:
        """Items of an activation the arbiter no longer has would sound with nothing to
        end them: cued ahead of a start that will not come (removed from the schedule,
        stopped, its window passed by a clock step), or begun gapless by the engine in the
        tick the window closed. Dropped, or cut as the window's end or a removal cuts."""
        for pb in [p for p in self._state.playbacks.values()
                   if self._state.arbiter.activation(p.activation.key) is None]:
            if not pb.started:
                self._executor.drop(pb)
            elif pb.outcome is None:
                over = pb.activation.end is not None and now >= pb.activation.end
                self._executor.stop_item(StopItem(pb.activation.key, pb.index,
                                         "completed" if over else "stopped"))
