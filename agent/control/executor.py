"""The executor: carries out what the arbiter decided, and nothing more.

It turns each started item into a :class:`Playback` (a decoder, the tuner or the line
input behind a voice of the engine, given by the
:class:`~agent.control.preparation.Preparer`), cues items ahead of their frame, stops and
cuts them, and writes each item's proof of play when it ends. It runs on the control
thread and never waits.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from agent.control.amplifier import AmplifierSwitch
from agent.control.playback import Playback, line_in_fields, relayed_station
from agent.control.preparation import ItemUnavailable, MediaLookup, Preparer
from agent.control.state import ControlState
from agent.core.arbiter import Activation, StartItem, StopItem
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.playout.sources import BufferSource
from agent.playout.voice import Engine, Voice
from agent.state.journal import Journal
from agent.state.plays import PlayJournal

log = logging.getLogger(__name__)

PREROLL_S = 2.5  # decoders start this long before a timed start (an MP3 under load: ~1 s)


class Executor:
    def __init__(self, state: ControlState, preparer: Preparer, *, clock: Clock,
                 engine: Engine, media: MediaLookup, amp: AmplifierSwitch,
                 chime_pcm: bytes, journal: Journal, plays: PlayJournal,
                 faults: FaultRegistry) -> None:
        self._state = state
        self._preparer = preparer
        self._clock = clock
        self._engine = engine
        self._media = media
        self._amp = amp
        self._chime = chime_pcm
        self._journal = journal
        self._plays = plays
        self._faults = faults

    def carry_out(self, actions: list[StartItem | StopItem], now: float) -> None:
        for action in actions:
            if isinstance(action, StopItem):
                if action.outcome == "preempted":
                    self._announce_preemption(action, actions)
                self.stop_item(action)
            else:
                try:
                    self.start_item(action, now)
                except Exception as exc:
                    self.contain(action.key, action.index, exc)

    def _announce_preemption(self, stopped: StopItem, actions: list[StartItem | StopItem]
                             ) -> None:
        """The ``preempted`` event of mqtt.md: what was on air, and what took over."""
        pb = self._state.playbacks.get((stopped.key, stopped.index))
        if pb is None or not pb.started:
            return
        body: dict[str, Any] = {"program_id": pb.activation.program_id,
                                "priority": pb.activation.priority}
        for action in actions:
            winner = self._state.arbiter.activation(action.key)
            if isinstance(action, StartItem) and winner is not None:
                body.update(by_program_id=winner.program_id, by_priority=winner.priority)
        self._journal.event("preempted", **body)

    def stop_item(self, action: StopItem) -> None:
        self.drop_cued_behind(action.key, action.index)
        pb = self._state.playbacks.get((action.key, action.index))
        if pb is None:
            return
        pb.outcome = action.outcome
        if not pb.started:
            self.drop(pb)
            return
        self.cancel_voices(pb)
        if pb.fallback is not None and pb.fallback.voice is not None:
            self._engine.cancel(pb.fallback.voice)
        if pb.voice_ended:
            self.finish(pb)
        self._state.changed()

    def drop_cued_behind(self, key: str, index: int) -> None:
        """The next item of the activation may be queued behind this one (gapless cue):
        dropped, or the engine would start it the moment this one is cut or dies."""
        for queued in [p for p in self._state.playbacks.values()
                       if p.activation.key == key and p.index != index and not p.started]:
            self.drop(queued)

    def cancel_voices(self, pb: Playback) -> None:
        for voice in (pb.chime, pb.voice):
            if voice is not None and not voice.done:
                self._engine.cancel(voice)

    def start_item(self, action: StartItem, now: float, preroll: bool = False) -> None:
        """Carry out a start; with ``preroll`` it is only cued ahead of its time, and an
        item that cannot be prepared yet is left for its real start to decide."""
        key = (action.key, action.index)
        if key in self._state.playbacks:
            if not preroll:
                self._state.changed()  # pre-cued, now on air for the arbiter: Status shows it
            return  # the engine starts it on its frame
        activation = self._state.arbiter.activation(action.key)
        assert activation is not None
        if preroll and not self._preparer.preparable(activation.items[action.index]):
            return
        at = action.at if action.at is not None and action.at > now else None
        if activation.priority == "emergency":
            self._amp.set(True)  # never waits for warm-up: the chime covers it
        elif at is None:
            at = self._amp.ready_at(now, self._state.settings.warmup_s)
        at_frame = None if at is None else self._engine.frame_at(at)
        offset_s = action.offset_s
        if offset_s > 0 and at is not None:
            offset_s += at - now  # a late join sounds at ``at``: be where the program is then
            duration = activation.items[action.index].duration_s
            if duration is not None and offset_s >= duration:
                self._state.arbiter.item_ended(action.key, action.index, "completed")
                return  # the item is over before it could sound
        pb = Playback(activation, action.index, activation.items[action.index], offset_s)
        if action.chime:
            # The chime sounds at once; the item is prepared (TTS, decoder) while it plays.
            pb.chime = Voice(f"chime:{action.key}", BufferSource(self._chime),
                             self._preparer.gain(activation), tag=pb)
            self.drop_all(self._engine.play([pb.chime], at_frame))
        try:
            self._preparer.prepare(pb)
        except ItemUnavailable as exc:
            self._item_unavailable(activation, action.index, exc)
            return
        self._state.playbacks[key] = pb
        assert pb.voice is not None
        if pb.chime is not None:
            self._engine.append(pb.voice)
        else:
            self.drop_all(self._engine.play([pb.voice], at_frame))

    def drop_all(self, voices: list[Voice]) -> None:
        for voice in voices:
            self._drop_voice(voice)

    def cue_ahead(self, now: float) -> None:
        """Pre-roll what starts at the next boundary, and the next item of what plays."""
        boundary = self._state.arbiter.next_boundary(now)
        playing = self._state.arbiter.playing
        on_air = None if playing is None else self._state.playbacks.get(playing)
        # A cue replaces the engine's queue: never while the item on air for the arbiter
        # still waits in it (for the amplifier's warm-up), or it would never sound.
        waiting = on_air is not None and not on_air.started
        if boundary is not None and boundary - now <= PREROLL_S and not waiting:
            for action in self._state.arbiter.preview(boundary):
                if isinstance(action, StartItem) and action.at == boundary:
                    self.start_item(action, now, preroll=True)
        if playing is None:
            return
        pb = self._state.playbacks.get(playing)
        if pb is None or pb.voice is None or pb.voice.first_frame is None or pb.item.duration_s \
                is None or pb.activation.live:
            return
        end = self._engine.time_of(pb.voice.first_frame) + pb.item.duration_s - pb.offset_s
        if end - now > PREROLL_S:
            return
        for action in self._state.arbiter.preview_after_item(playing[0], playing[1], end):
            if isinstance(action, StartItem) and action.key == playing[0] \
                    and (action.key, action.index) not in self._state.playbacks \
                    and (action.at is None or action.at - now <= PREROLL_S):
                activation = self._state.arbiter.activation(action.key)
                assert activation is not None
                nxt = Playback(activation, action.index, activation.items[action.index], 0.0)
                try:
                    self._preparer.prepare(nxt)
                except ItemUnavailable:
                    return  # handled when the arbiter asks for it
                self._state.playbacks[(action.key, action.index)] = nxt
                assert nxt.voice is not None
                if action.at is None:
                    self._engine.append(nxt.voice)  # gapless
                else:  # after a repeat gap, on its exact frame
                    self.drop_all(self._engine.play([nxt.voice],
                                                     self._engine.frame_at(action.at)))

    def _item_unavailable(self, activation: Activation, index: int,
                          exc: ItemUnavailable) -> None:
        log.warning("%s item %d: %s", activation.key, index, exc)
        if exc.fault == "media_missing":
            self._journal.event("media_missing", program_id=activation.program_id,
                                media_id=activation.items[index].ref)
        self._faults.raise_(exc.fault, str(exc))
        self._fail_item(activation, index)

    def contain(self, key: str, index: int, exc: Exception) -> None:
        """An unexpected error while preparing, starting or playing an item fails that
        item, and only that item."""
        log.error("%s item %d failed: %r", key, index, exc, exc_info=exc)
        self._faults.raise_("play_failed", f"{key} item {index}: {exc!r}"[:300])
        pb = self._state.playbacks.pop((key, index), None)
        if pb is not None:
            self.cancel_voices(pb)
        activation = self._state.arbiter.activation(key)
        if pb is not None and pb.started:
            pb.outcome, pb.ended_at = "failed", self._clock.now()
            with contextlib.suppress(Exception):
                self.finish(pb)
        else:
            if pb is not None:
                with contextlib.suppress(Exception):
                    self.release(pb)
            if activation is not None:
                self._fail_item(activation, index)
                return
        self._state.arbiter.item_ended(key, index, "failed")
        self._state.ledger.item_failed(key)

    def _fail_item(self, activation: Activation, index: int) -> None:
        """An item that could not sound at all: its play report says ``failed`` (nothing
        left the card), and the arbiter moves on."""
        now = self._clock.now()
        item = activation.items[index]
        entry = self._state.media_entry(item.ref)
        pb = Playback(activation, index, item, 0.0, started_at=now, ended_at=now,
                      outcome="failed", sha256=None if entry is None else entry.sha256)
        record = pb.record(self._journal.stamp, self._state.settings.rate)
        self._plays.on_air(activation.key, index, record, now)
        self._plays.ended(record, now)
        self._journal.played(record)
        self._state.arbiter.item_ended(activation.key, index, "failed")
        self._state.ledger.item_failed(activation.key)

    def finish(self, pb: Playback) -> None:
        """Write the proof of play and let go of the item."""
        self._state.playbacks.pop(pb.key, None)
        if pb.fallback is not None:
            self.finish_fallback(pb)
        if pb.started_at is not None:
            # The play journal keeps what the arbiter decided: a relay cut by a preemption
            # rejoins live when the preemption ends, after a restart too, even though the
            # report of the segment that carried nothing says failed.
            rejoins = pb.outcome == "preempted" and pb.activation.live
            if not relayed_station(pb) or (pb.outcome == "completed" and not pb.played_frames):
                pb.outcome = "failed"  # what sounded says so, not the end of its window
            record = pb.record(self._journal.stamp, self._state.settings.rate)
            self._journal.played(record)
            self._plays.ended(record, pb.ended_at if pb.ended_at is not None
                              else self._clock.now(), "preempted" if rejoins else None)
            if pb.item.kind == "line_in":
                self._journal.event("line_in_off", **line_in_fields(pb),
                                    played_s=record["played_s"], outcome=record["outcome"])
        self.release(pb)
        self._state.changed()

    def release(self, pb: Playback) -> None:
        self.finish_fallback(pb)  # a stop() while the fallback relays: reported, released
        if pb.stream is not None:
            pb.stream.close()
        if pb.sha256:
            self._media.unpin(pb.sha256)
        if pb.lease is not None:
            pb.lease.release()

    def drop(self, pb: Playback) -> None:
        """Let go of an item before it started: out of the engine too (it may be cued, or
        its first sample may be on its way), or it would sound without a playback."""
        self._state.playbacks.pop(pb.key, None)
        self.cancel_voices(pb)
        self.release(pb)

    def _drop_voice(self, voice: Voice) -> None:
        pb = voice.tag
        if isinstance(pb, Playback) and not pb.started and voice is pb.voice:
            self.drop(pb)

    def finish_fallback(self, pb: Playback) -> None:
        fb = pb.fallback
        pb.fallback = None
        if fb is None or fb.voice is None:
            return
        self._engine.cancel(fb.voice)
        fb.played_frames = fb.voice.frames_played
        if fb.voice.first_frame is not None:
            fb.started_at = self._engine.time_of(fb.voice.first_frame)
            fb.ended_at = self._clock.now()
            fb.outcome = "completed" if relayed_station(fb) else "failed"
            self._journal.played(fb.record(self._journal.stamp, self._state.settings.rate))
        if fb.lease is not None:
            fb.lease.release()

    def regain(self) -> None:
        """Apply the current volumes to what plays (the engine ramps the change)."""
        for pb in self._state.playbacks.values():
            for voice in (pb.voice, pb.chime):
                if voice is not None:
                    self._engine.set_gain(voice, self._preparer.gain(pb.activation))
        self._state.changed()
