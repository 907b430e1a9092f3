"""The playout process: the engine and the sound card, with nothing else in its
interpreter (issue 10, docs/design.md "Playout process").

The agent starts it (agent.playout.remote.PlayoutProcess) and speaks to it over the
channel of agent.playout.channel. Each voice's PCM arrives on its own pipe; this process
only mixes what it is told to, writes it to the card, and reports frame-accurate facts.
When the agent goes away (the channel ends) it closes the card and exits.

    python -m agent.playout.host --output wav:/tmp/out.wav --rate 48000 --channel-fd 3
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass

from agent.playout import channel
from agent.playout.engine import PlayoutEngine
from agent.playout.pipes import LivePipeSource, PcmPipe, PipeSource
from agent.playout.tally import Counts, TallyWriter
from agent.playout.voice import (
    BYTES_PER_FRAME,
    EngineEvent,
    OutputFailed,
    Voice,
    VoiceEnded,
    VoiceStarted,
)
from agent.recording.tap import RecordingTap
from agent.service.logs import configure_logging
from drivers.audio import AudioOutput, AudioOutputError, open_output
from drivers.audio.base import AUDIO_RT_PRIORITY, request_realtime
from drivers.thread import NamedThread

log = logging.getLogger("agent.playout.host")

RECORD_CHUNK = (channel.RECORD_MAX_BYTES - channel.RECORD_HEADER.size) \
    // BYTES_PER_FRAME * BYTES_PER_FRAME
OPEN_RETRY_S = 0.3  # below the agent's hang limit: the failure reports are the heartbeat
CLOSE_AFTER_END_S = 0.5  # an ended voice may still fade out; its pipe is closed after
# Alone in its interpreter at real-time priority, the engine keeps less in the card than
# inside the agent (engine.PlayoutEngine's default: 40 ms in 20 ms periods), so a cue is
# heard sooner: each 15 ms period is rendered when the card holds 8 ms not yet due by its
# clock, so it holds 8 to 23 ms (15.5 on average) ahead of what is heard. Every wake of
# the engine's thread costs some 85 us here before it does anything (a bare Python sleep
# loop, measured): 10 ms periods cost 0.5 % of a core more for 2.5 ms less on average.
# A relay (line input, tuner) plays in 10 ms periods: its jitter buffer's 25 ms prefill
# and the line input's 50 ms from capture to card were sized for them (15 ms periods
# measured 45.8 ms where 10 ms gave 38.4).
CARD_BUFFER_S = 0.023
PERIOD_S = 0.015
RELAY_PERIOD_S = 0.010
MIN_LEAD_S = CARD_BUFFER_S - PERIOD_S  # the least the card holds when a period is rendered
# While a file, a stream or the chime plays steady, a card that can give back what it has
# not played (AudioOutput.rewind) is kept this deep: a stall of the whole machine up to
# some 135 ms is not heard (this virtual machine stalls every thread for 16 to 70 ms a
# few times in ten minutes), and a cue takes back what lies beyond MIN_LEAD_S, so it is
# heard as soon as in the shallow card (docs/design.md "The card's lead").
DEEP_BUFFER_S = 0.150
# A call on the engine's thread costs some 20 µs more than it does warm (27 µs just after a
# 10 ms sleep, 0.8 µs in a loop): written every third period, the tally costs a third of
# that and is at most 45 ms behind.
TALLY_EVERY_PERIODS = 3
BURST_S = 0.010  # room above a relay's jitter capacity for the feeder's bursts


@dataclass
class _Ended:
    source: PcmPipe
    close_at: float  # wall time


class PlayoutHost:
    def __init__(self, output: AudioOutput, sock: socket.socket, record_fd: int,
                 tally: TallyWriter) -> None:
        self._sock = sock
        self._tally = tally
        self._record_fd = record_fd
        if record_fd >= 0:
            os.set_blocking(record_fd, False)
            output = RecordingTap(output, self._record)
        self._output = output
        self._burst_bytes = round(BURST_S * output.rate) * BYTES_PER_FRAME
        self.engine = PlayoutEngine(output, self._on_event, buffer_s=CARD_BUFFER_S,
                                    period_s=PERIOD_S, relay_period_s=RELAY_PERIOD_S,
                                    on_period=self._on_period,
                                    on_period_every=TALLY_EVERY_PERIODS,
                                    deep_buffer_s=DEEP_BUFFER_S)
        self._sources: dict[int, PcmPipe] = {}
        self._ended: list[_Ended] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._underrun_logged = 0

    # --- to the agent ------------------------------------------------------------------
    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, VoiceStarted):
            message = {"ev": "started", "id": event.voice.tag,
                       "at": self._output.frame_time(event.frame)}
        elif isinstance(event, VoiceEnded):
            voice = event.voice
            end = self._output.frame_time(event.frame)
            message = {"ev": "ended", "id": voice.tag, "at": end, "cut": event.cut,
                       "counts": _counts(voice)}
            with self._lock:
                source = self._sources.pop(_voice_id(voice), None)
                if source is not None:
                    self._ended.append(_Ended(source, end + CLOSE_AFTER_END_S))
        elif isinstance(event, OutputFailed):
            message = {"ev": "output_failed", "message": event.message}
        else:
            message = {"ev": "output_recovered"}
        self._send(message)

    def _on_period(self, voice: Voice) -> None:
        self._tally.write(_voice_id(voice), _counts(voice))

    def _send(self, message: channel.Message) -> None:
        try:
            channel.send(self._sock, message)
        except channel.ChannelClosed:
            self._stop.set()

    def _record(self, index: int, frames: bytes) -> None:
        """Hand what left the card to the agent's recorder; never blocks (a full pipe
        drops the period, and the recorder sees the gap)."""
        start = self._output.frame_time(index)
        rate = self._output.rate
        view = memoryview(frames)
        for offset in range(0, len(frames), RECORD_CHUNK):
            chunk = view[offset:offset + RECORD_CHUNK]
            at = start + offset // BYTES_PER_FRAME / rate
            try:
                os.writev(self._record_fd, (channel.RECORD_HEADER.pack(at, len(chunk)), chunk))
            except BlockingIOError:
                return
            except OSError:  # the agent is gone; the channel tells the rest
                return

    def _report_status(self) -> None:
        engine = self.engine
        idle = engine.idle_since_frame
        states: dict[str, Counts] = {}
        for voice in engine.voices():
            states[str(_voice_id(voice))] = _counts(voice)
        underrun = self._output.underrun_frames
        if underrun > self._underrun_logged:
            log.warning("the card ran dry: %.1f ms of silence (%.1f ms since it opened)",
                        (underrun - self._underrun_logged) * 1000 / self._output.rate,
                        underrun * 1000 / self._output.rate)
            self._underrun_logged = underrun
        self._send({"ev": "status",
                    "idle_since": None if idle is None else self._output.frame_time(idle),
                    "last_sound": self._output.frame_time(engine.last_sound_frame),
                    "card_underrun_frames": underrun, "voices": states})
        now = self._output.frame_time(self._output.next_frame_index())
        with self._lock:
            due = [e for e in self._ended if e.close_at <= now]
            self._ended = [e for e in self._ended if e.close_at > now]
        for ended in due:
            ended.source.close()

    # --- from the agent ----------------------------------------------------------------
    def _voice(self, spec: channel.Message, fd: int) -> Voice:
        jitter = spec.get("jitter")
        source: PcmPipe = PipeSource(fd) if jitter is None \
            else LivePipeSource(fd, int(jitter[0]), int(jitter[1]), self._burst_bytes)
        voice_id = int(spec["id"])
        with self._lock:
            self._sources[voice_id] = source
        return Voice(f"v{voice_id}", source, float(spec["gain"]), tag=voice_id)

    def _apply(self, message: channel.Message, fds: list[int]) -> None:
        op = message.get("op")
        if op == "play":
            voices = [self._voice(spec, fd) for spec, fd in zip(message["voices"], fds,
                                                                 strict=True)]
            at = message.get("at")
            at_frame = None if at is None else self.engine.frame_at(float(at))
            self._close(self.engine.play(voices, at_frame))
        elif op == "append":
            self.engine.append(self._voice(message["voice"], fds[0]))
        elif op == "cancel":
            voice = self._find(int(message["id"]))
            if voice is not None:
                self.engine.cancel(voice)
        elif op == "gain":
            voice = self._find(int(message["id"]))
            if voice is not None:
                self.engine.set_gain(voice, float(message["gain"]))
        elif op == "stop":
            self._stop.set()
        else:
            raise ValueError(f"unknown op {op!r}")

    def _find(self, voice_id: int) -> Voice | None:
        return next((v for v in self.engine.voices() if v.tag == voice_id), None)

    def _close(self, dropped: list[Voice]) -> None:
        """Voices replaced in the queue before they started: never read again."""
        with self._lock:
            sources = [self._sources.pop(_voice_id(v), None) for v in dropped]
        for source in sources:
            if source is not None:
                source.close()

    # --- the process -------------------------------------------------------------------
    def run(self, resume: bool) -> int:
        if not self._open_output(resume):
            return 0
        status = NamedThread(target=self._status_loop, name="playout-status", daemon=True)
        status.start()
        gc.collect()
        gc.freeze()  # nothing to collect here later: no collection can stall the card
        sys.setswitchinterval(0.002)
        try:
            while not self._stop.is_set():
                try:
                    message, fds = channel.receive(self._sock)
                except channel.ChannelClosed:
                    log.info("the agent closed the channel: stopping")
                    break
                try:
                    self._apply(message, fds)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error("bad message from the agent %r: %s", message, exc)
                    for fd in fds:
                        os.close(fd)
        finally:
            self._stop.set()
            status.join(1.0)
            self.engine.stop()
        return 0

    def _open_output(self, resume: bool) -> bool:
        """Start the engine, trying again while the card cannot be opened (each failure
        reported: the agent raises audio_output and sees the process alive). False when
        the agent went away meanwhile."""
        failed = False
        while True:
            try:
                self.engine.start(resume=resume)
            except AudioOutputError as exc:
                failed = True
                self._send({"ev": "output_failed", "message": str(exc)})
                if self._stop.wait(OPEN_RETRY_S):
                    return False
                continue
            if failed:
                self._send({"ev": "output_recovered"})
            return True

    def _status_loop(self) -> None:
        while not self._stop.wait(channel.STATUS_INTERVAL_S):
            self._report_status()


def _voice_id(voice: Voice) -> int:
    assert isinstance(voice.tag, int)  # every voice here is tagged with the agent's id
    return voice.tag


def _counts(voice: Voice) -> Counts:
    """(played, underrun, relayed, lead) frames, as agent.playout.remote reads them."""
    source = voice.source
    relayed, lead = (source.relayed_frames, source.lead_frames) \
        if isinstance(source, LivePipeSource) else (0, 0)
    return voice.frames_played, voice.underrun_frames, relayed, lead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broadcast-agent-playout")
    parser.add_argument("--output", required=True, help="audio.output, e.g. alsa:default")
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--record-fd", type=int, default=-1)
    parser.add_argument("--tally-fd", type=int, default=-1,
                        help="shared memory for the counts of the voice on air "
                             "(agent.playout.tally)")
    parser.add_argument("--resume", action="store_true",
                        help="a restart: the card kept running, continue its capture")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, "%(levelname)s playout %(name)s: %(message)s")
    # Every thread here real-time, not only the engine's and the card's: they share one
    # GIL, and a normal-priority thread holding it while CPU hogs preempt it would stall
    # the card (measured: 32 gaps of 5-15 ms in a minute under tests/e2e/test_load.py).
    # Threads started later inherit the policy; the audio threads raise theirs above it.
    request_realtime(AUDIO_RT_PRIORITY - 1)
    sock = socket.socket(fileno=args.channel_fd)
    host = PlayoutHost(open_output(args.output, args.rate), sock, args.record_fd,
                       TallyWriter(args.tally_fd))
    return host.run(args.resume)


if __name__ == "__main__":
    sys.exit(main())
