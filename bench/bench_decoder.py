"""Decoder start latency: ``DecoderPool.open()`` to the first PCM byte in the agent, for
files (warm worker and cold pool) and for a live MP3 stream on loopback.

Run: ``.venv/bin/python -m bench.bench_decoder``
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.playout.decoder import DecoderPool
from bench.common import (
    BenchRun,
    fmt,
    make_mp3,
    make_tone_wav,
    markdown_table,
    percentile,
    scratch_dir,
)

RATE = 48000
FILE_OPENS = 50  # per case
STREAM_OPENS = 30  # per case; a stream takes ~1 s to start, and the bench stays short
WARM_READY_S = 0.5  # after a warm open, so the replacement worker has loaded libvlc
FIRST_PCM_TIMEOUT_S = 10.0
POLL_S = 0.0005
STREAM_KBIT_S = 128
PACE_S = 0.02  # the stream server sends this much audio at a time, in real time
STREAM_CACHING_MS = (300, 100)  # 300 is the default of audio.stream_caching_ms
ICECAST_BURST_BYTES = 65535  # Icecast's default burst-size


class PacedMp3Server(ThreadingHTTPServer):
    """Serves one MP3 file as an endless live stream at its bitrate, in real time, after
    ``burst_bytes`` sent at once on connect (Icecast's burst-size; 0 is the slowest start
    a live source can give). Each connection joins at a different, unaligned byte
    offset, as a listener joining a live stream does."""

    daemon_threads = True

    def __init__(self, mp3: bytes, kbit_s: int, burst_bytes: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _PacedHandler)
        self.mp3 = mp3
        self.chunk = round(kbit_s * 1000 / 8 * PACE_S)
        self.burst_bytes = burst_bytes
        self.connections = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, name="paced-mp3",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/live.mp3"

    def start(self) -> PacedMp3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self._thread.join(5)
        self.server_close()


class _PacedHandler(BaseHTTPRequestHandler):
    server: PacedMp3Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.connections += 1
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        data, chunk = server.mp3, server.chunk
        position = server.connections * 7919 % len(data)
        next_at = time.monotonic()
        try:
            burst = data[position:position + server.burst_bytes]
            self.wfile.write(burst)
            position += len(burst)
            while not server.stopping.is_set():
                piece = data[position:position + chunk]
                position = (position + chunk) % len(data)
                if len(piece) < chunk:
                    piece += data[:position]
                self.wfile.write(piece)
                next_at += PACE_S
                time.sleep(max(0.0, next_at - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            return


def first_pcm_ms(pool: DecoderPool, mrl: str, caching_ms: int) -> float | None:
    """Milliseconds from open() to the first PCM byte; None if none came in time."""
    began = time.monotonic()
    stream = pool.open(mrl, 0.0, caching_ms)
    try:
        while stream.pcm_bytes == 0:
            if time.monotonic() - began > FIRST_PCM_TIMEOUT_S or stream.finished:
                return None
            time.sleep(POLL_S)
        return (time.monotonic() - began) * 1000
    finally:
        stream.close()


@dataclass
class Case:
    name: str
    measure: Callable[[], float | None]
    opens: int
    settle_s: float  # pause after each open
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0


def cold_open(mrl: str) -> float | None:
    pool = DecoderPool(RATE, time.monotonic)
    try:
        return first_pcm_ms(pool, mrl, 0)
    finally:
        pool.close()


def run_cases(cases: list[Case]) -> None:
    """Round-robin over the cases, so that load changes on the machine hit all alike."""
    for round_ in range(max(case.opens for case in cases)):
        for case in cases:
            if round_ >= case.opens:
                continue
            latency = case.measure()
            if latency is None:
                case.failures += 1
            else:
                case.latencies_ms.append(latency)
            time.sleep(case.settle_s)


def measure(tmp: Path) -> list[Case]:
    wav = str(make_tone_wav(tmp / "tone.wav", 5.0))
    mp3_path = make_mp3(tmp / "noise.mp3", 30.0, STREAM_KBIT_S)
    mp3 = str(mp3_path)
    paced = PacedMp3Server(mp3_path.read_bytes(), STREAM_KBIT_S).start()
    burst = PacedMp3Server(mp3_path.read_bytes(), STREAM_KBIT_S, ICECAST_BURST_BYTES).start()
    warm = DecoderPool(RATE, time.monotonic)
    try:
        time.sleep(1.0)
        first_pcm_ms(warm, wav, 0)  # the pool keeps a warm worker from its first open on
        time.sleep(1.0)
        # The agent opens files with caching 0 and streams with audio.stream_caching_ms.
        cases = [
            Case("WAV file, warm worker", partial(first_pcm_ms, warm, wav, 0), FILE_OPENS,
                 WARM_READY_S),
            Case("MP3 file, warm worker", partial(first_pcm_ms, warm, mp3, 0), FILE_OPENS,
                 WARM_READY_S),
            Case("WAV file, cold (new pool)", partial(cold_open, wav), FILE_OPENS, 0.0),
            Case("MP3 file, cold (new pool)", partial(cold_open, mp3), FILE_OPENS, 0.0)]
        for server, how in ((paced, "no burst"), (burst, "64 KB burst")):
            cases += [Case(f"HTTP MP3 stream, {how}, warm worker, caching {ms} ms",
                           partial(first_pcm_ms, warm, server.url, ms), STREAM_OPENS,
                           WARM_READY_S)
                      for ms in STREAM_CACHING_MS]
        run_cases(cases)
    finally:
        warm.close()
        paced.stop()
        burst.stop()
    return cases


def main() -> str:
    run = BenchRun("bench_decoder", "Decoder start latency")
    with scratch_dir("bench-decoder") as tmp:
        cases = measure(tmp)
    rows = []
    for case in cases:
        values = case.latencies_ms
        rows.append([case.name, str(len(values)), str(case.failures),
                     *(fmt(percentile(values, q)) if values else "-" for q in (50, 90, 99)),
                     fmt(max(values)) if values else "-"])
    body = [
        f"`DecoderPool.open(mrl)` (agent/playout/decoder.py) to the first PCM byte read "
        f"from the worker in the agent process (polled every {POLL_S * 1000:.1f} ms), "
        f"{FILE_OPENS} opens per file case and {STREAM_OPENS} per stream case, the cases "
        f"interleaved round-robin, {WARM_READY_S} s after each warm open so that the pool's "
        "replacement worker has loaded libvlc (the control loop pre-rolls 1.5 s ahead, so "
        "this is the normal path). Cold: a new pool for each "
        "open, so the worker starts Python and loads libvlc first (and the pool starts its "
        "next warm worker at the same time, as on the agent's first item). Files: a 5 s "
        f"48 kHz WAV tone and a {STREAM_KBIT_S} kbit/s CBR MP3, opened with caching 0 as the "
        f"control loop does. Stream: a {STREAM_KBIT_S} kbit/s MP3 served over HTTP on "
        f"loopback, paced at real time in {PACE_S * 1000:.0f} ms pieces, either from the "
        f"first byte (no burst: the slowest a live source can be) or after a burst of "
        f"{ICECAST_BURST_BYTES} bytes on connect (Icecast's default `burst-size`, about 4 s "
        "of audio), each connection joining at an unaligned byte offset; libvlc's "
        "network-caching set to each value tried for `audio.stream_caching_ms`. With "
        "30-50 samples p99 is close to the maximum.",
        "",
        markdown_table(["case", "opens", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                       rows),
        "",
        "Target for a stream: first PCM ≤ 300 ms.",
    ]
    return run.section("\n".join(body))


if __name__ == "__main__":
    print(main())
