"""The playout engine as the agent sees it, running in its own process.

:class:`PlayoutProcess` is an :class:`~agent.playout.engine.Engine` like the in-process
engine: the control loop cues voices on frames and hears back when they start and end.
Behind it, the mixer and the sound card run in agent.playout.host, a process with nothing
else in its interpreter, so nothing the agent does (schedule parsing, hashing, MQTT, HTTP,
SQLite) can hold up the card; PCM goes there through pipes (agent.playout.feed), cues and
facts through the channel (agent.playout.channel) of each process
(agent.playout.host_process).

The "playout-events" thread reads the facts and supervises the process: when it exits,
or sends nothing for HANG_S (hung: killed), a new one is started at once, continuing the
card's capture, and everything that was on air or queued is cued again, each voice from
the PCM it had not played yet. The control loop sees no change but a fault
(``playout_failed``, raised while the process is down).

Frames: the agent numbers frames from the instant this object was made, at the nominal
rate; the channel speaks wall time, and each playout process maps it to its card's own
frames. A voice queued when ``play`` replaces the queue is reported dropped at once; in
the instant the playout process may already have started it (it fades out within
FADE_OUT_S, and its start is ignored by the control loop, which let go of it).
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.clock import Clock
from agent.playout import channel
from agent.playout.feed import Feeder, VoiceFeed, pipe_fill
from agent.playout.host_process import HostProcess
from agent.playout.tally import Counts, Tally
from agent.playout.voice import (
    BYTES_PER_FRAME,
    EngineEvent,
    OutputFailed,
    OutputRecovered,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

# Silence of the playout process that means it hung: three statuses missed. The agent
# looks every STATUS_INTERVAL_S, so it knows within 0.75 s.
HANG_S = 0.7
STARTUP_S = 10.0  # a new process's first word: Python, numpy and the card opened
MAX_BACKOFF_S = 10.0


@dataclass
class _Cue:
    feed: VoiceFeed
    mode: str  # "now", "at" or "after" (gapless behind the one before)
    at: float | None = None


class PlayoutProcess:
    def __init__(self, output_spec: str, rate: int, clock: Clock,
                 on_event: Callable[[EngineEvent], None], *,
                 on_down: Callable[[str], None], on_up: Callable[[], None],
                 record_fd: int | None = None,
                 interpreter: str = sys.executable) -> None:
        self.rate = rate
        self._spec = output_spec
        self._interpreter = interpreter  # runs agent.playout.host
        self._clock = clock
        self._on_event = on_event
        self._on_down = on_down
        self._on_up = on_up
        self._epoch = clock.now()
        self.idle_since_frame: int | None = 0
        self.last_sound_frame = 0
        self.restarts = 0
        self.card_underrun_frames = 0  # silence the card played for want of audio, in all
        self._card_underrun_seen = 0  # ... and as the present process last counted it
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # feeds, cues, the process and its channel
        self._feeds: dict[int, VoiceFeed] = {}
        self._current: VoiceFeed | None = None
        self._queue: list[_Cue] = []
        self._host: HostProcess | None = None
        self._tally: Tally | None = None  # the present process's
        self._last_word = 0.0
        self._up = False
        self._stop = threading.Event()
        self._feeder = Feeder(self._held_feeds, self._send_gain, clock.now)
        self._record_fd = record_fd  # where the playout process writes what left the card
        self._thread = NamedThread(target=self._run, name="playout-events", daemon=True)

    # --- Engine ------------------------------------------------------------------------
    def frame_at(self, wall_time: float) -> int:
        return round((wall_time - self._epoch) * self.rate)

    def time_of(self, frame: int) -> float:
        return self._epoch + frame / self.rate

    def play(self, voices: list[Voice], at_frame: int | None = None) -> list[Voice]:
        at = None if at_frame is None else self.time_of(at_frame)
        with self._lock:
            dropped = [cue.feed for cue in self._queue]
            feeds = [self._feed(voice) for voice in voices]
            self._queue = [_Cue(feed, "after") for feed in feeds]
            if self._queue:
                self._queue[0].mode, self._queue[0].at = ("now", None) if at is None \
                    else ("at", at)
                feeds[0].opens(at)
                if at is None:  # its first PCM in the pipe before the engine wakes for it
                    self._prime(feeds[0])
            self._send_play(feeds, at)
            for feed in dropped:
                self._let_go(feed)
        self._feeder.wake()
        for feed in dropped:
            feed.voice.cut = True
        return [feed.voice for feed in dropped]

    def append(self, voice: Voice) -> None:
        with self._lock:
            feed = self._feed(voice)
            self._queue.append(_Cue(feed, "after"))
            self._send({"op": "append", "voice": self._spec_of(feed)}, [feed.read_fd])
        self._feeder.wake()

    def cancel(self, voice: Voice) -> None:
        with self._lock:
            feed = next((f for f in self._feeds.values() if f.voice is voice), None)
            if feed is not None:
                self._queue = [cue for cue in self._queue if cue.feed is not feed]
                self._send({"op": "cancel", "id": feed.voice_id})
        voice.cut = True

    def set_gain(self, voice: Voice, gain: float) -> None:
        voice.gain = gain
        self._feeder.wake()  # it passes the change on

    def wake_feeder(self) -> None:
        """A relay's source has new audio: pass it on now, not at the feeder's next turn."""
        self._feeder.wake()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._spawn(resume=False)
        self._first_word()
        self._feeder.start()
        self._thread.start()

    def _first_word(self) -> None:
        """Wait (up to STARTUP_S) until the new process has opened the card or said why
        it cannot, so that the agent starts after its card, as with a card in-process."""
        host, deadline = self._host, self._clock.monotonic() + STARTUP_S
        assert host is not None
        while self._clock.monotonic() < deadline:
            try:
                message = host.receive()
            except TimeoutError:
                continue
            except channel.ChannelClosed:
                return  # the events thread restarts it
            self._heard(message)
            return

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        with self._lock:
            self._send({"op": "stop"})
            host = self._host
        if host is not None:
            host.wait_or_kill(timeout)
        self._thread.join(timeout)
        self._feeder.stop(timeout)
        with self._lock:
            for feed in list(self._feeds.values()):
                self._let_go(feed)
            self._close_channel()

    def buffered_s(self) -> float | None:
        """Seconds of PCM in the pipe of the voice on air, waiting for the playout process
        (None when nothing is on air)."""
        with self._lock:
            feed = self._current
            if feed is None or feed.read_fd < 0:
                return None
            return pipe_fill(feed.read_fd) / BYTES_PER_FRAME / self.rate

    @property
    def alive(self) -> bool:
        """The playout process runs and speaks (False while it is being replaced)."""
        return self._up and self._thread.is_alive() \
            and self._clock.monotonic() - self._last_word < HANG_S

    # --- the process -------------------------------------------------------------------
    def _spawn(self, resume: bool) -> None:
        tally = Tally()
        try:
            self._host = HostProcess(self._spec, self.rate, record_fd=self._record_fd,
                                     tally_fd=tally.fd, resume=resume,
                                     interpreter=self._interpreter)
        except OSError:
            tally.close()
            raise
        tally.close_fd()
        self._tally = tally
        self._card_underrun_seen = 0
        self._last_word = self._clock.monotonic() + STARTUP_S - HANG_S
        log.info("playout process %d started%s", self._host.pid,
                 " (continuing the card)" if resume else "")

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            host = self._host
            if host is not None:  # None: the last start failed
                reason = self._listen(host)
                if reason is None or self._stop.is_set():
                    return
                self._up = False
                log.error("playout process %s: restarting", reason)
                self._on_down(f"the playout process {reason}; restarting it")
                host.kill()
                with self._lock:
                    if self._tally is not None:
                        self._took(self._tally.counts())
                    self._close_channel()
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._spawn(resume=True)
                except OSError as exc:
                    log.error("cannot start the playout process: %s", exc)
                else:
                    self.restarts += 1
                    self._cue_again()
            if self._host is None:
                self._stop.wait(backoff)  # not holding the lock: cues go on being taken
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.5
            self._feeder.wake()

    def _listen(self, host: HostProcess) -> str | None:
        """Take the process's facts until it dies or hangs; returns why (None: stopped)."""
        while not self._stop.is_set():
            try:
                message = host.receive()
            except TimeoutError:
                exited = host.exit_reason()
                if exited is not None:
                    return exited
                if self._clock.monotonic() - self._last_word > HANG_S:
                    return f"sent nothing for {HANG_S} s (hung)"
                continue
            except channel.ChannelClosed:
                return None if self._stop.is_set() else host.closed_reason()
            self._heard(message)
        return None

    def _heard(self, message: channel.Message) -> None:
        self._last_word = self._clock.monotonic()
        if not self._up:
            self._up = True
            self._on_up()
        self._take(message)

    def _close_channel(self) -> None:
        if self._host is not None:
            self._host.close_channel()
        if self._tally is not None:
            self._tally.close()
        self._host = self._tally = None

    def _cue_again(self) -> None:
        """After a restart: what was on air goes on from the PCM it had not played, then
        the queue as it was cued."""
        if self._current is not None:
            self._current.carry_over()
            self._send_play([self._current], None)
        for cue in self._queue:
            if cue.mode == "after":
                self._send({"op": "append", "voice": self._spec_of(cue.feed)},
                           [cue.feed.read_fd])
            else:
                self._send_play([cue.feed], cue.at)

    # --- facts from the process --------------------------------------------------------
    def _take(self, message: channel.Message) -> None:
        kind = message.get("ev")
        if kind == "status":
            self._status(message)
            return
        if kind == "output_failed":
            self._on_event(OutputFailed(str(message.get("message"))))
            return
        if kind == "output_recovered":
            self._on_event(OutputRecovered())
            return
        with self._lock:
            feed = self._feeds.get(int(message["id"]))
            if feed is None:
                return  # let go of already
            voice = feed.voice
            if kind == "started":
                self._queue = [cue for cue in self._queue if cue.feed is not feed]
                self._current = feed
                feed.opens(None)
                if voice.first_frame is not None:
                    return  # on air again after a restart: not a new start
                voice.first_frame = self.frame_at(float(message["at"]))
                event: EngineEvent = VoiceStarted(voice, voice.first_frame)
            else:
                if self._current is feed:
                    self._current = None
                feed.took(*_counts(message["counts"]))
                voice.end_frame = self.frame_at(float(message["at"]))
                voice.cut = voice.cut or bool(message["cut"])
                self._let_go(feed)
                event = VoiceEnded(voice, voice.end_frame, bool(message["cut"]))
        self._on_event(event)

    def _status(self, message: channel.Message) -> None:
        idle = message.get("idle_since")
        self.idle_since_frame = None if idle is None else self.frame_at(float(idle))
        self.last_sound_frame = self.frame_at(float(message["last_sound"]))
        underrun = int(message["card_underrun_frames"])
        self.card_underrun_frames += max(0, underrun - self._card_underrun_seen)
        self._card_underrun_seen = underrun
        with self._lock:
            self._took({int(key): _counts(counts)
                        for key, counts in message.get("voices", {}).items()})

    def _took(self, counts: dict[int, Counts]) -> None:
        """The playout process's counts of the voices it plays, from its status or, once
        it is gone, its tally (with the lock held)."""
        for voice_id, voice_counts in counts.items():
            feed = self._feeds.get(voice_id)
            if feed is not None and feed.voice.end_frame is None:
                feed.took(*voice_counts)

    # --- helpers (with the lock held) --------------------------------------------------
    def _feed(self, voice: Voice) -> VoiceFeed:
        feed = VoiceFeed.open(next(self._ids), voice, self.rate)
        self._feeds[feed.voice_id] = feed
        return feed

    def _prime(self, feed: VoiceFeed) -> None:
        """Moves what the voice has now into its pipe (never blocks); the feeder does the
        rest, as for any voice."""
        try:
            feed.pump(self._clock.now())
        except Exception:  # the feeder meets it again and ends the voice
            log.exception("feeding %s failed", feed.voice)

    def _let_go(self, feed: VoiceFeed) -> None:
        self._feeds.pop(feed.voice_id, None)
        feed.close()

    def _held_feeds(self) -> list[VoiceFeed]:
        """Every voice the playout process may still play, its pipe open or not: a gain
        change must reach a voice whose last PCM is already in the pipe."""
        with self._lock:
            return list(self._feeds.values())

    def _spec_of(self, feed: VoiceFeed) -> channel.Message:
        spec: channel.Message = {"id": feed.voice_id, "gain": feed.voice.gain}
        if feed.live is not None:
            spec["jitter"] = list(feed.live.jitter_sizes)
        return spec

    def _send_play(self, feeds: list[VoiceFeed], at: float | None) -> None:
        self._send({"op": "play", "voices": [self._spec_of(f) for f in feeds], "at": at},
                   [f.read_fd for f in feeds])

    def _send_gain(self, feed: VoiceFeed) -> None:
        with self._lock:
            self._send({"op": "gain", "id": feed.voice_id, "gain": feed.sent_gain})

    def _send(self, message: channel.Message, fds: list[int] | None = None) -> None:
        """To the process, if there is one; a dead or hung one's successor gets the whole
        state (_cue_again)."""
        if self._host is not None:
            self._host.send(message, fds)


def _counts(counts: list[int]) -> Counts:
    """[played, underrun, relayed, lead] frames of a voice, as the host sends them."""
    played, underrun, relayed, lead = (int(n) for n in counts)
    return played, underrun, relayed, lead
