"""Reading the agent's off-air recordings (health-http.md GET /recordings) in tests.

A served span is a chained Ogg Opus stream: whole segments one after the other. libsndfile
decodes one link at a time, so the chain is split at the pages that begin a logical
stream (header flag 0x02) and each link is decoded by itself.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import requests
import soundfile as sf

from agent.recording.store import SegmentStore, open_encoder
from tests.support.wavfile import Capture

RATE = 12_000  # agent.recording.store.RATE
Floats = npt.NDArray[np.float64]
_SEGMENT = re.compile(r"(\d+)-(\d+)\.opus$")


@dataclass(frozen=True)
class Served:
    start: float  # X-Recording-Start
    audio: npt.NDArray[np.float32]  # every link decoded, in order
    segments: list[tuple[float, int]]  # (start, samples) of each link, from their names
    body: bytes
    content_type: str

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / RATE


def ogg_links(blob: bytes) -> list[bytes]:
    """The logical streams of a chained Ogg stream, in order."""
    starts, offset = [], 0
    while offset < len(blob):
        if blob[offset:offset + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {offset}")
        flags, segments = blob[offset + 5], blob[offset + 26]
        lacing = blob[offset + 27:offset + 27 + segments]
        if flags & 0x02:
            starts.append(offset)
        offset += 27 + segments + sum(struct.unpack(f"{segments}B", lacing))
    return [blob[a:b] for a, b in zip(starts, [*starts[1:], len(blob)], strict=True)]


def decode_links(blob: bytes) -> list[npt.NDArray[np.float32]]:
    decoded = []
    for link in ogg_links(blob):
        audio, rate = sf.read(io.BytesIO(link), dtype="float32")
        assert rate == RATE, rate
        decoded.append(audio)
    return decoded


def fetch(health_url: str, first: float, last: float) -> requests.Response:
    return requests.get(f"{health_url}/recordings", timeout=30,
                        params={"from": datetime.fromtimestamp(first).astimezone().isoformat(),
                                "to": datetime.fromtimestamp(last).astimezone().isoformat()})


def served(reply: requests.Response) -> Served:
    """A 200 answer of /recordings, decoded and checked link by link against its segments."""
    assert reply.status_code == 200, (reply.status_code, reply.text[:200])
    names = [n.strip() for n in reply.headers["X-Recording-Segments"].split(",")]
    segments = []
    for name in names:
        match = _SEGMENT.match(name)
        assert match is not None, name
        segments.append((int(match[1]) / 1e6, int(match[2])))
    links = decode_links(reply.content)
    assert [len(a) for a in links] == [n for _, n in segments]
    start = datetime.fromisoformat(reply.headers["X-Recording-Start"]).timestamp()
    assert abs(start - segments[0][0]) < 1e-5
    return Served(start, np.concatenate(links), segments, reply.content,
                  reply.headers["Content-Type"])


def envelope(samples: Floats, rate: int, window_s: float = 0.020,
             hop_s: float = 0.020) -> Floats:
    """RMS of ``window_s`` windows every ``hop_s``."""
    window, hop = round(window_s * rate), round(hop_s * rate)
    count = (len(samples) - window) // hop + 1
    power = np.cumsum(np.concatenate(([0.0], samples.astype(np.float64) ** 2)))
    starts = np.arange(count) * hop
    rms: Floats = np.sqrt((power[starts + window] - power[starts]) / window)
    return rms


def sink_mono(capture: Capture, first: float, last: float) -> Floats:
    """What left the card over [first, last), mono, full scale 1.0."""
    stereo = capture.samples[capture.index_at(first):capture.index_at(last)]
    mono: Floats = stereo.astype(np.float64).mean(axis=1) / 32768.0
    return mono


def recorded_mono(recording: Served, first: float, last: float) -> Floats:
    begin = round((first - recording.start) * RATE)
    assert begin >= 0 and recording.end >= last, "the recording does not cover the span"
    return recording.audio[begin:begin + round((last - first) * RATE)].astype(np.float64)


def best_lag_s(recording: Served, capture: Capture, first: float, last: float,
               search_s: float = 0.2) -> float:
    """The shift of the recording against the card (1 ms steps) that best matches their
    20 ms RMS envelopes: how far the recording's time stamps are off."""
    sink = envelope(sink_mono(capture, first, last), capture.rate, hop_s=0.001)
    lags = np.arange(-search_s, search_s + 1e-9, 0.001)
    scores = []
    for lag in lags:
        rec = envelope(recorded_mono(recording, first + lag, last + lag), RATE, hop_s=0.001)
        n = min(len(rec), len(sink))
        scores.append(np.corrcoef(rec[:n], sink[:n])[0, 1])
    return float(lags[int(np.argmax(scores))])


def write_segment(store: SegmentStore, start: float, seconds: float) -> None:
    """A closed segment of ``seconds`` at a constant level, stored as the recorder does."""
    partial = store.partial_path(start)
    samples = np.full(round(seconds * RATE), 0.2, np.float32)
    with open_encoder(partial) as encoder:
        encoder.write(samples)
    store.add(partial, start, len(samples))
