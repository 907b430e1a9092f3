"""The playout engine: the real-time thread that feeds the sound card.

It produces periods of PCM from *voices* (a PCM source with a gain) and writes them to
the AudioOutput, keeping a small, steady amount buffered. Because the output numbers its
frames and maps them to wall time, a voice cued for frame F starts on exactly that frame.
Every transition is ramped: a voice fades in over ``FADE_IN_S`` and the voice it replaces
fades out over ``FADE_OUT_S`` (both well under the 50 ms the contract allows), so nothing
clicks. The engine decides nothing: the control loop tells it what to play.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.playout.aired import UnreadPeriods, frames_ahead
from agent.playout.reading import S16LE, Block, SteadyReader, gain_curve, pull
from agent.playout.voice import (
    BYTES_PER_FRAME,
    EngineEvent,
    OutputFailed,
    OutputRecovered,
    Voice,
    VoiceEnded,
    VoiceStarted,
    landed_late,
)
from drivers.audio.base import AudioOutput, AudioOutputError, request_realtime
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

FADE_IN_S = 0.005
FADE_OUT_S = 0.020
MIN_SLEEP_S = 0.002  # a period less than this early is rendered at once
PERIOD_S = 0.020  # each period costs fixed Python work: fewer, longer ones use less CPU


@dataclass
class _Cue:
    voice: Voice
    at_frame: int | None  # None: right after the voice before it (or now, if none)


class PlayoutEngine:
    def __init__(self, output: AudioOutput, on_event: Callable[[EngineEvent], None],
                 buffer_s: float = 0.040, period_s: float = PERIOD_S,
                 relay_period_s: float | None = None,
                 on_period: Callable[[Voice], None] = lambda voice: None,
                 on_period_every: int = 1, deep_buffer_s: float | None = None) -> None:
        """Each period is rendered when the card holds ``buffer_s - period_s`` not yet
        due. While a voice whose source cannot be peeked at (a relay's, fed as it
        arrives) is on air or next, periods are ``relay_period_s`` long (at most
        ``period_s``), so that it reaches the card sooner. ``deep_buffer_s``: while a
        voice plays steady from a source the engine can peek at, and the output can take
        back what it holds (AudioOutput.rewind), the card is kept that deep instead, safe
        from longer stalls of the machine; a cue, a cut or a gain change takes back what
        lies beyond ``buffer_s - period_s`` and is heard as soon. ``on_period`` is called
        on the engine's thread with the voice on air after every ``on_period_every``
        periods written to the output (it must not block)."""
        self.output = output
        self.rate = output.rate
        self._on_event = on_event
        self._on_period = on_period
        self._on_period_every = on_period_every
        self._periods_written = 0
        self._period = int(self.rate * period_s)
        if buffer_s <= period_s:
            raise ValueError(f"a buffer of {buffer_s} s cannot hold more than one period "
                             f"of {period_s} s")
        self._target_buffer = int(self.rate * buffer_s)
        self._min_lead = self._target_buffer - self._period
        self._deep_buffer = self._target_buffer
        if deep_buffer_s is not None and output.can_rewind:
            self._deep_buffer = max(int(self.rate * deep_buffer_s), self._target_buffer)
        self._min_sleep = int(self.rate * MIN_SLEEP_S)
        self._fade_in = int(self.rate * FADE_IN_S)
        self._silence = bytes(self._period * BYTES_PER_FRAME)
        self._relay_period = self._period if relay_period_s is None \
            else int(self.rate * relay_period_s)
        if not 0 < self._relay_period <= self._period:
            raise ValueError(f"a relay period of {relay_period_s} s is not within the "
                             f"period of {period_s} s")
        self._relay_silence = bytes(self._relay_period * BYTES_PER_FRAME)
        self._steady = SteadyReader(self._period, period_s)
        self._unread = UnreadPeriods()  # the engine thread's
        # Woken for a cue: the next period comes at the shallow card's pace, so that a cut
        # and the cue a moment after it share a period (a fade rendered at once delays it).
        self._woken = False
        # Written by the control side to wake the engine's thread for a cue, a cut or a
        # gain change: it takes back from a deep card what it must replace.
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._current: Voice | None = None
        self._fading: list[Voice] = []
        self._cut: list[Voice] = []  # taken off the air; the next period begins its fade
        self._queue: list[_Cue] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False
        self.idle_since_frame: int | None = 0
        self.last_sound_frame = 0  # one past the last period that was not digital silence

    # --- control side ------------------------------------------------------------------
    def start(self, resume: bool = False) -> None:
        """Open the output and start feeding it; ``resume``: after the previous writer of
        the card died (AudioOutput.resume)."""
        if resume:
            self.output.resume()
        else:
            self.output.open()
        self._thread = NamedThread(target=self._run, name="playout", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self.output.close()
        if self._thread is None or not self._thread.is_alive():
            fd, self._wake_fd = self._wake_fd, -1
            os.close(fd)

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def frame_at(self, wall_time: float) -> int:
        return round((wall_time - self.output.frame_time(0)) * self.rate)

    def time_of(self, frame: int) -> float:
        return self.output.frame_time(frame)

    def play(self, voices: list[Voice], at_frame: int | None = None) -> list[Voice]:
        """Replace everything queued with ``voices`` played back to back from ``at_frame``
        (or as soon as possible); what plays then fades out. Returns the queued voices
        that were dropped without ever starting."""
        with self._lock:
            dropped = [cue.voice for cue in self._queue]
            self._queue = [_Cue(v, at_frame if i == 0 else None) for i, v in enumerate(voices)]
            if at_frame is None and voices:
                self._queue[0].at_frame = -1  # "now", also replacing the current voice
        self._wake()
        for voice in dropped:
            voice.cut = True
        return dropped

    def append(self, voice: Voice) -> None:
        """Play ``voice`` right after the last queued (or current) one, without a gap."""
        with self._lock:
            self._queue.append(_Cue(voice, None))

    def cancel(self, voice: Voice) -> None:
        """Fade out ``voice`` if it plays, or drop it from the queue."""
        with self._lock:
            if self._current is voice:
                self._cut.append(voice)
                self._current = None
            self._queue = [cue for cue in self._queue if cue.voice is not voice]
        voice.cut = True
        self._wake()

    def set_gain(self, voice: Voice, gain: float) -> None:
        voice.gain = gain
        self._wake()

    def voices(self) -> list[Voice]:
        """Every voice the engine still holds: on air, fading out, queued."""
        with self._lock:
            current = [] if self._current is None else [self._current]
            return current + self._cut + self._fading + [cue.voice for cue in self._queue]

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the real-time thread ----------------------------------------------------------
    def _run(self) -> None:
        request_realtime()
        while not self._stop.is_set():
            try:
                first = self.output.next_frame_index()
                playhead = self.output.playhead()
                if unread := self._unread.periods:  # attribute, not call: most periods
                    self._unread.settle(playhead)
                target = self._deep_buffer if unread and not self._woken \
                    else self._target_buffer
                excess = frames_ahead(self.output.buffered_frames(), first - playhead,
                                      self._period) - (target - self._period)
                if excess > self._min_sleep:
                    self._sleep(min(excess / self.rate, 0.05))
                    continue
                block, events = self._render(first)
                landed = first
                try:
                    landed = self.output.write(block, timeout=1.0)
                except AudioOutputError:
                    self._unread.forget_from(first)
                    raise
                finally:  # a failed write leaves the voices where the render put them
                    self._emit(events, first, landed)
                self._woken = False
                self._periods_written += 1
                if self._periods_written % self._on_period_every == 0 \
                        and (on_air := self._current) is not None:
                    self._on_period(on_air)
                if self._failed:
                    self._failed = False
                    self._on_event(OutputRecovered())
            except AudioOutputError as exc:
                if not self._failed:
                    self._failed = True
                    log.error("audio output failed: %s", exc)
                    self._on_event(OutputFailed(str(exc)))
                self._stop.wait(0.5)
            except Exception:  # keep the card fed whatever a voice did
                log.exception("playout period failed")
                self._stop.wait(0.05)

    def _sleep(self, seconds: float) -> None:
        """Up to ``seconds``; woken by the control side, it takes back from the card what
        it must render again."""
        if select.select((self._wake_fd,), (), (), seconds)[0]:
            os.eventfd_read(self._wake_fd)
            self._woken = True
            self._take_back()

    def _take_back(self) -> None:
        """The card gives back the steady periods it holds beyond the least lead, for a
        cue, a cut or a gain change to be heard as soon as in a shallow card."""
        if not self._unread.periods:
            return
        due = self.output.playhead() + self._min_lead
        if (start := self._unread.take_back(self.output, due)) is not None:
            self.last_sound_frame = min(self.last_sound_frame, start)
        elif self._deep_buffer > self._target_buffer \
                and self._unread.first_at_or_after(due) is not None:
            log.warning("the card gave back nothing of what it held ahead: it is kept "
                        "shallow from now on, or every cue would wait for it")
            self._deep_buffer = self._target_buffer

    def _emit(self, events: list[EngineEvent], rendered_for: int, landed: int) -> None:
        """Tell what the period did, at the frames it landed on: later than those it was
        rendered for when the card ran dry in between (it played silence, and its
        numbering moved on)."""
        if late := landed - rendered_for:
            self._unread.landed_late(rendered_for, late)
            events = [landed_late(event, late) for event in events]
            if self.last_sound_frame > rendered_for:  # this period sounded
                self.last_sound_frame += late
        for event in events:
            self._on_event(event)

    def _render(self, first: int) -> tuple[bytes, list[EngineEvent]]:
        with self._lock:
            for voice in self._cut:  # they fade out from this period's first frame
                self._begin_fade_out(voice)
            self._cut.clear()
            if self._current is None and not self._fading and not self._queue:
                if self.idle_since_frame is None:
                    self.idle_since_frame = first
                return self._silence, []  # idle: no mixing work at all
            n, silence = self._period_now()
            steady = self._render_steady(first, n)
        if steady is not None:
            if steady != silence:
                self.last_sound_frame = first + n
            return steady, []
        mix = np.zeros((n, 2), dtype=np.float32)
        events: list[EngineEvent] = []
        with self._lock:
            self._unread.take_all()
            for voice in list(self._fading):
                self._mix_fade(voice, mix, first, 0, events)
            pos = 0
            while pos < n:
                if self._queue and self._due(self._queue[0], first + pos):
                    self._start_head(first, pos, mix, events)
                limit = self._limit(first, pos, n)
                if self._current is None or limit == pos:
                    pos = limit if limit > pos else n
                    continue
                pos = self._mix_current(mix, first, pos, limit, events)
            if self._current is not None or self._fading:
                self.idle_since_frame = None
            elif self.idle_since_frame is None:
                self.idle_since_frame = first
        pcm = np.clip(mix, -32768, 32767).astype(S16LE)
        if pcm.any():
            self.last_sound_frame = first + n
        return pcm.tobytes(), events

    def _period_now(self) -> tuple[int, bytes]:
        """The frames of the period to render and their digital silence: a relay's
        shorter period while one is on air, or next when nothing is."""
        voice = self._current
        if voice is None and self._queue:
            voice = self._queue[0].voice
        if voice is not None and voice.peekable is None:
            return self._relay_period, self._relay_silence
        return self._period, self._silence

    def _render_steady(self, first: int, n: int) -> bytes | None:
        """The period when it is one voice on air at a steady gain of at most 1, with
        nothing fading and no cue due in it: most periods, the same samples as the general
        path (reading.SteadyReader). Peeked at, it stays in the source until the card has
        played it (UnreadPeriods). None: the general path, with the voice's PCM left
        unread."""
        voice = self._current
        if voice is None or self._fading or voice.fade_in_left or voice.gain > 1.0 \
                or voice.applied_gain != voice.gain or self._limit(first, 0, n) < n \
                or (self._queue and self._due(self._queue[0], first)):
            return None
        self.idle_since_frame = None
        if self._unread.voice() in (None, voice) \
                and (block := self._steady.peek_period(voice, n, self._unread.bytes)):
            self._unread.add(voice, first, n)
            return block
        self._unread.take_all()
        block = self._steady.read_period(voice, n)
        if block is not None:
            voice.frames_played += n
        return block

    def _due(self, cue: _Cue, frame: int) -> bool:
        if cue.at_frame is None:
            return self._current is None
        return cue.at_frame < 0 or cue.at_frame <= frame

    def _limit(self, first: int, pos: int, n: int) -> int:
        """End of the stretch from ``pos`` before a timed cue must start."""
        if self._queue and self._queue[0].at_frame is not None:
            at = self._queue[0].at_frame
            if at >= 0:
                return min(n, max(at - first, pos))
        return n

    def _start_head(self, first: int, pos: int, mix: Block, events: list[EngineEvent]) -> None:
        voice = self._queue.pop(0).voice
        if self._current is not None:
            old = self._current
            self._begin_fade_out(old)
            self._mix_fade(old, mix, first, pos, events)
        voice.first_frame = first + pos
        voice.fade_in_left = self._fade_in
        voice.applied_gain = voice.gain
        self._current = voice
        events.append(VoiceStarted(voice, first + pos))

    def _begin_fade_out(self, voice: Voice) -> None:
        voice.cut = True
        voice.fade_out_total = voice.fade_out_left = int(self.rate * FADE_OUT_S)
        self._fading.append(voice)

    def _mix_fade(self, voice: Voice, mix: Block, first: int, offset: int,
                  events: list[EngineEvent]) -> None:
        """The voice's fade out, from ``offset`` in the period; ended in the period whose
        frames reach the card with its last (told then, where they landed)."""
        take = min(voice.fade_out_left, len(mix) - offset)
        pcm = pull(voice, take)
        got = len(pcm)
        if got:
            done = voice.fade_out_total - voice.fade_out_left
            ramp = 1.0 - (np.arange(done, done + got, dtype=np.float32) + 1) \
                / voice.fade_out_total
            mix[offset:offset + got] += pcm * (ramp * voice.applied_gain)[:, None]
        voice.fade_out_left -= take
        if voice.fade_out_left <= 0 or (got < take and voice.source.finished):
            self._fading.remove(voice)
            voice.end_frame = first + offset + (take if voice.fade_out_left <= 0 else got)
            events.append(VoiceEnded(voice, voice.end_frame, cut=True))

    def _mix_current(self, mix: Block, first: int, pos: int, limit: int,
                     events: list[EngineEvent]) -> int:
        voice = self._current
        assert voice is not None
        want = limit - pos
        pcm = pull(voice, want)
        got = len(pcm)
        if got:
            mix[pos:pos + got] += pcm * gain_curve(voice, got, self._fade_in)[:, None]
            voice.frames_played += got
        if got == want:
            return limit
        if voice.source.finished:
            voice.end_frame = first + pos + got
            self._current = None
            events.append(VoiceEnded(voice, voice.end_frame, cut=False))
            return pos + got
        voice.underrun_frames += want - got
        return limit
