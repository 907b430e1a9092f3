"""A live audio stream on loopback, like an Icecast mount, with switches for its failures.

    with PacedStream.tone(tmp_path, 440.0) as stream:
        stream.url          # http://127.0.0.1:<port>/live.mp3
        stream.kill()       # close every connection and refuse new ones
        stream.stall()      # keep connections open, send nothing
        stream.silence()    # keep sending valid MP3 frames of digital silence
        stream.resume()     # back to the programme (and accepting again after kill)

The programme is an MP3 made locally (sox, then lame at CBR without bit reservoir, so
every frame decodes on its own and the server may switch between programme and silence
on any frame). It is served at real-time pace: each listener first gets ``burst_s`` of
audio (as Icecast's burst-on-connect does, so players start fast), then one frame per
frame duration, from the live position (a stalled or reconnecting listener misses what
went out meanwhile, as on a real live stream).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tests.support import media

Mode = Literal["playing", "stalled", "silent", "killed"]

_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_RATES_HZ = (44100, 48000, 32000)
SAMPLES_PER_FRAME = 1152
RATE = 48000



def encode_mp3(wav: Path, mp3: Path) -> Path:
    """CBR 128 kb/s, no bit reservoir, no LAME tag frame: frames independent and uniform."""
    media.run_tool(["lame", "--quiet", "-t", "--nores", "-b", "128", "--cbr", str(wav), str(mp3)])
    return mp3


def mp3_frames(data: bytes) -> list[bytes]:
    """The MPEG-1 Layer III frames of ``data`` (anything before the first sync skipped)."""
    frames: list[bytes] = []
    pos = data.find(b"\xff")
    while pos >= 0 and pos + 4 <= len(data):
        b1, b2 = data[pos + 1], data[pos + 2]
        sync = b1 & 0xE0 == 0xE0
        mpeg1_layer3 = (b1 >> 1) & 0x0F == 0b1101  # version bits 11, layer bits 01
        bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 0x03
        if not (sync and mpeg1_layer3 and 0 < bitrate_index < 15 and rate_index < 3):
            pos = data.find(b"\xff", pos + 1)
            continue
        length = 144 * _BITRATES_KBPS[bitrate_index] * 1000 // _RATES_HZ[rate_index] \
            + ((b2 >> 1) & 0x01)
        frames.append(data[pos:pos + length])
        pos += length
    if not frames:
        raise ValueError("no MPEG-1 Layer III frames found")
    return frames


def make_programme(directory: Path, frequency_hz: float, seconds: float = 20.0,
                   level_dbfs: float = -12.0) -> tuple[list[bytes], list[bytes]]:
    """(tone frames, silence frames) of the same format, made with sox and lame."""
    directory.mkdir(parents=True, exist_ok=True)
    tone_wav, silent_wav = directory / "stream-tone.wav", directory / "stream-silence.wav"
    media.tone(tone_wav, frequency_hz, seconds, level_dbfs, RATE)
    media.write_frames(silent_wav, np.zeros((2 * RATE, 2), dtype=np.int16), RATE)
    tone = mp3_frames(encode_mp3(tone_wav, directory / "stream-tone.mp3").read_bytes())
    silence = mp3_frames(encode_mp3(silent_wav, directory / "stream-silence.mp3").read_bytes())
    return tone, silence


@dataclass
class PacedStream:
    """The stream server; see the module docstring."""

    frames: list[bytes]
    silent_frames: list[bytes]
    burst_s: float = 0.5
    path: str = "/live.mp3"
    mode: Mode = "playing"
    connections: int = 0  # listeners ever accepted while not killed
    _listener: socket.socket | None = field(default=None, repr=False)
    _port: int = 0
    _clients: set[socket.socket] = field(default_factory=set, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _epoch: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def tone(cls, directory: Path, frequency_hz: float, burst_s: float = 0.5) -> PacedStream:
        tone, silence = make_programme(directory, frequency_hz)
        return cls(tone, silence, burst_s=burst_s)

    @property
    def frame_s(self) -> float:
        return SAMPLES_PER_FRAME / RATE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}"

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> PacedStream:
        self._listen()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self._drop_clients()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> PacedStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- switches ----------------------------------------------------------------------
    def kill(self) -> None:
        """Close every connection and refuse new ones (connection refused)."""
        self.mode = "killed"
        self._close_listener()
        self._drop_clients()

    def stall(self) -> None:
        self.mode = "stalled"

    def silence(self) -> None:
        self.mode = "silent"

    def resume(self) -> None:
        if self.mode == "killed":
            self._listen()
        self.mode = "playing"

    # --- serving -----------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(16)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(lambda: self._accept_loop(listener), "stream-accept")

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _drop_clients(self) -> None:
        with self._lock:
            clients = list(self._clients)
            self._clients.clear()
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by kill() or stop()
            with self._lock:
                self._clients.add(client)
                self.connections += 1
            self._spawn(lambda c=client: self._serve(c), "stream-client")

    def _live_index(self) -> int:
        return int((time.monotonic() - self._epoch) / self.frame_s)

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(5.0)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 16384:
                chunk = client.recv(4096)
                if not chunk:
                    return
                request += chunk
            target = request.split(b" ", 2)[1].decode(errors="replace") if b" " in request \
                else ""
            if target.split("?")[0] != self.path:
                client.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n"
                           b"Cache-Control: no-cache\r\nicy-name: test\r\n\r\n")
            self._pace(client)
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _pace(self, client: socket.socket) -> None:
        """Frames from the live position, ``burst_s`` ahead at first, then in real time."""
        burst = round(self.burst_s / self.frame_s)
        next_index = self._live_index() - burst
        while not self._stop.is_set() and self.mode != "killed":
            live = self._live_index()
            if self.mode == "stalled":
                next_index = live
            elif next_index <= live:
                frames = self.silent_frames if self.mode == "silent" else self.frames
                out = b"".join(frames[i % len(frames)] for i in range(next_index, live + 1))
                next_index = live + 1
                client.sendall(out)
            time.sleep(self.frame_s / 2)
