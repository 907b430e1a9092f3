"""One-shot libvlc decoder process: ``python -m agent.playout.decoder_worker``.

Loads libvlc first (so an idle worker is warm), then reads one JSON job line from stdin:
``{"mrl": ..., "start_s": 0.0, "rate": 48000, "caching_ms": 300}``. It decodes through
libvlc's audio callbacks as S16N stereo and writes framed PCM, state changes and
heartbeats to stdout (agent/playout/framing.py). It exits when the media ends or fails,
or when stdin closes (the agent is gone or wants it dead).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from typing import Any, BinaryIO

import vlc

from agent.playout.framing import HEARTBEAT, PCM, STATE, write_frame
from drivers.thread import NamedThread

HEARTBEAT_S = 0.5
FILE_CACHING_MS = 3000
# libvlc hands over one MP3 frame (about 26 ms) per callback. The PCM goes out in frames of
# up to this much audio, so that the agent's reader wakes less often: a file is decoded
# seconds ahead of the card (FILE_CACHING_MS), a stream only its caching ahead. The first
# callback's goes out at once (a start waits for nothing); a callback finding the last
# frame sent this long ago sends what is held, and so do a state change and a heartbeat.
FILE_PCM_BATCH_S = 0.25
STREAM_PCM_BATCH_S = 0.1


class Worker:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._pcm = bytearray()  # PCM not yet sent
        self._pcm_batch_s = STREAM_PCM_BATCH_S  # set by run() from the job's media
        self._pcm_batch = 0  # bytes; set by run() from the job's rate
        self._pcm_sent_at: float | None = None  # monotonic; None: no PCM sent yet
        self._threads_kept: set[int] = set()  # libvlc threads whose thread state is kept
        # soxr: libvlc's default choice for 22.05/44.1 -> 48 kHz repeats samples audibly;
        # soxr leaves 48 kHz bit-exact and keeps every item's last samples (speex does not).
        self.instance = vlc.Instance(["--no-video", "--quiet", "--no-xlib", "--aout=amem",
                                      "--no-audio-time-stretch", "--no-stats",
                                      "--audio-resampler=soxr"])
        self.player = self.instance.media_player_new()
        # ctypes callbacks must stay referenced for as long as libvlc may call them.
        self._play_cb = vlc.CallbackDecorators.AudioPlayCb(self._on_play)
        self.player.audio_set_callbacks(self._play_cb, None, None, None, None, None)
        events = self.player.event_manager()
        events.event_attach(vlc.EventType.MediaPlayerEndReached, self._on_end)
        events.event_attach(vlc.EventType.MediaPlayerEncounteredError, self._on_error)
        events.event_attach(vlc.EventType.MediaPlayerPlaying, self._on_playing)

    def send(self, kind: bytes, payload: bytes) -> None:
        """A state or heartbeat frame, after the PCM held so far."""
        with self._lock:
            self._send_pcm_locked()
            self._write_locked(kind, payload)

    def _write_locked(self, kind: bytes, payload: bytes) -> None:
        try:
            write_frame(self._out, kind, payload)
        except (BrokenPipeError, ValueError):
            os._exit(0)

    def _send_pcm_locked(self) -> None:
        if self._pcm:
            self._write_locked(PCM, bytes(self._pcm))
            self._pcm.clear()
            self._pcm_sent_at = time.monotonic()

    def state(self, state: str, **extra: Any) -> None:
        self.send(STATE, json.dumps({"state": state, **extra}).encode())

    def _on_play(self, _data: Any, samples: Any, count: int, _pts: int) -> None:
        self._keep_thread_state()
        with self._lock:
            self._pcm += ctypes.string_at(samples, count * 4)
            sent_at = self._pcm_sent_at
            if sent_at is None or len(self._pcm) >= self._pcm_batch \
                    or time.monotonic() - sent_at >= self._pcm_batch_s:
                self._send_pcm_locked()

    def _keep_thread_state(self) -> None:
        """ctypes makes a Python thread state for each callback on a thread Python did not
        start (libvlc's decoder thread) and deletes it after: measured, 0.25 % of a core
        at some 38 callbacks a second (1.75 -> 1.50 % for the whole worker). One
        PyGILState_Ensure never released keeps that thread's state for the callbacks after
        it; the GIL is still released when each returns. The worker is one-shot and ends
        with os._exit, so nothing is left to tear down."""
        thread = threading.get_ident()
        if thread not in self._threads_kept:
            ctypes.pythonapi.PyGILState_Ensure()
            self._threads_kept.add(thread)

    def _on_playing(self, _event: Any) -> None:
        self.state("playing")

    def _on_end(self, _event: Any) -> None:
        self.state("ended")
        self._done.set()

    def _on_error(self, _event: Any) -> None:
        self.state("error", message="libvlc could not open or decode the media")
        self._done.set()

    def run(self, job: dict[str, Any]) -> int:
        rate = int(job.get("rate", 48000))
        self.player.audio_set_format("S16N", rate, 2)
        self._pcm_batch_s = pcm_batch_s(job["mrl"])
        self._pcm_batch = round(rate * self._pcm_batch_s) * 4
        media = self.instance.media_new(job["mrl"])
        caching = int(job.get("caching_ms", 300))
        # libvlc hands PCM to the callback in step with its clock, only as far ahead of
        # it as the input's caching: 50 ms of file caching kept the card 0.15 s ahead of
        # the decoder, and a worker starved that long by CPU load left a gap on air.
        # FILE_CACHING_MS keeps local files about 2 s ahead (libvlc's own cap), without
        # delaying the first samples.
        media.add_option(f":file-caching={FILE_CACHING_MS}")
        media.add_option(f":network-caching={caching}")
        if job.get("start_s"):
            media.add_option(f":start-time={float(job['start_s']):.3f}")
        self.player.set_media(media)
        if self.player.play() != 0:
            self.state("error", message="libvlc refused to play")
            return 1
        while not self._done.wait(HEARTBEAT_S):
            self.send(HEARTBEAT, b"")
        return 0


def pcm_batch_s(mrl: str) -> float:
    """The most audio a frame of PCM from the worker holds for media ``mrl``: a local file
    is a path (the media cache's) or a file: URI."""
    local = "://" not in mrl or mrl.startswith("file:")
    return FILE_PCM_BATCH_S if local else STREAM_PCM_BATCH_S


def _exit_when_stdin_closes(stdin: BinaryIO) -> None:
    while stdin.read(4096):
        pass
    os._exit(0)


def main() -> int:
    # Decoding runs about 2 s ahead of the card (FILE_CACHING_MS): it yields the CPU to
    # the playout process, and a worker's heavy start-up never competes with what is on
    # air.
    os.nice(5)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    worker = Worker(out)
    worker.send(HEARTBEAT, b"")  # warm and ready
    line = stdin.readline()
    if not line:
        return 0
    NamedThread(target=_exit_when_stdin_closes, args=(stdin,), name="stdin-watch",
                daemon=True).start()
    code = worker.run(json.loads(line))
    sys.stdout.flush()
    os._exit(code)  # libvlc teardown is where it hangs; the process is one-shot anyway


if __name__ == "__main__":
    raise SystemExit(main())
