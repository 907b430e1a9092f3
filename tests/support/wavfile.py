"""Reading what the clocked WAV sink (hil.md) captured, for the whole team's tests.

The capture may still be growing and its header may lag behind the data, so the RIFF
chunks are parsed here and the data chunk is taken to the end of the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from drivers.audio.wav import ClockedWavSink

Samples = npt.NDArray[np.int16]
T = TypeVar("T")

FULL_SCALE = 32768.0
SILENCE = 64  # sample magnitude below which a frame counts as silent
START_TOLERANCE_S = 0.005  # the contract: a programme's first sample within 5 ms


# A stall of the machine the card ran dry in (a virtual machine holds every thread off its
# CPUs for up to some 50 ms now and then: bench_rt_latency, bench_load's wake probe) is
# shorter than this; a playout process that died or hung leaves a longer one.
MACHINE_STALL_S = 0.1

Span = tuple[int, int]  # (first frame, frames), in the card's numbering


@dataclass(frozen=True)
class Capture:
    samples: Samples  # shape (frames, 2), int16
    rate: int
    start_epoch: float  # wall time at which frame 0 left the card
    underruns: tuple[Span, ...] = ()  # where the card padded silence, its writer late
    removed: tuple[Span, ...] = ()  # taken out of ``samples`` (as_written), sorted

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    def time_of(self, index: int) -> float:
        """Wall time at which frame ``index`` left the card."""
        card = index
        for first, frames in self.removed:
            if first > card:
                break
            card += frames
        return self.start_epoch + card / self.rate

    def index_at(self, epoch: float) -> int:
        """The frame that left the card at wall time ``epoch`` (nearest; in a span taken
        out, the frame after it)."""
        card = round((epoch - self.start_epoch) * self.rate)
        before = sum(min(frames, card - first) for first, frames in self.removed
                     if first < card)
        return card - before

    def segment(self, start_epoch: float, duration_s: float) -> Samples:
        begin = max(0, self.index_at(start_epoch))
        return self.samples[begin:begin + round(duration_s * self.rate)]

    def first_non_silent(self, threshold: int = SILENCE,
                         after_epoch: float | None = None) -> int | None:
        """Index of the first frame with a sample of magnitude ≥ ``threshold``."""
        begin = 0 if after_epoch is None else max(0, self.index_at(after_epoch))
        loud = np.abs(self.samples[begin:].astype(np.int32)).max(axis=1) >= threshold
        hits = np.flatnonzero(loud)
        return begin + int(hits[0]) if hits.size else None

    def as_written(self, max_stall_s: float = MACHINE_STALL_S) -> Capture:
        """What the agent wrote: the card's padding of underruns shorter than
        ``max_stall_s`` taken out, times still mapped to where each frame left the card.
        For the tests of what the agent plays (no gap between items, a ramped
        preemption); the tests of how it plays in real time (tests/e2e/test_load.py,
        test_playout_process.py) read the card as it is."""
        if self.removed:
            raise ValueError("padding already taken out")
        short = tuple(span for span in self.underruns if span[1] < max_stall_s * self.rate)
        if not short:
            return self
        keep = np.ones(self.frames, dtype=bool)
        for first, frames in short:
            keep[first:first + frames] = False
        return Capture(self.samples[keep], self.rate, self.start_epoch, self.underruns, short)


def _parse_wav(blob: bytes, path: Path) -> tuple[int, Samples]:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    offset, rate = 12, None
    while offset + 8 <= len(blob):
        chunk_id, size = struct.unpack_from("<4sI", blob, offset)
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", blob, body)
            if (fmt, channels, bits) != (1, 2, 16):
                raise ValueError(f"{path}: expected PCM s16 stereo, got {fmt=} {channels=} {bits=}")
        elif chunk_id == b"data":
            if rate is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            usable = (len(blob) - body) // 4 * 4  # the header may lag: take data to EOF
            samples = np.frombuffer(blob, dtype="<i2", count=usable // 2, offset=body)
            return rate, samples.reshape(-1, 2)
        offset = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def read_capture(path: Path) -> Capture:
    """The WAV written so far and its sidecar ``<path>.json``."""
    _, sidecar_path, underruns_path = ClockedWavSink.files_of(path)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    rate, samples = _parse_wav(path.read_bytes(), path)
    if sidecar["rate"] != rate:
        raise ValueError(f"{path}: sidecar rate {sidecar['rate']} != WAV rate {rate}")
    return Capture(samples=samples, rate=rate, start_epoch=float(sidecar["start_epoch"]),
                   underruns=_underruns(underruns_path))


def _underruns(path: Path) -> tuple[Span, ...]:
    """The spans of ``<capture>.underruns`` (drivers/audio/wav.py), those that touch joined:
    the card pads an underrun a tick at a time."""
    spans: list[Span] = []
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:  # not the clocked WAV sink's capture (a HIL rig's)
        return ()
    for first, frames in sorted(tuple(map(int, line.split())) for line in lines):
        if spans and spans[-1][0] + spans[-1][1] >= first:
            last_first, last_frames = spans[-1]
            spans[-1] = (last_first, max(last_frames, first + frames - last_first))
        else:
            spans.append((first, frames))
    return tuple(spans)


def first_sound(capture: Capture, after: float) -> float:
    """Wall time of the first frame that is not silent after ``after``."""
    index = capture.first_non_silent(after_epoch=after)
    assert index is not None, f"nothing played after {after}"
    return capture.time_of(index)


def assert_starts_on_time(capture: Capture, start: float, frequency: float,
                          tolerance_s: float = START_TOLERANCE_S) -> None:
    """A tone of ``frequency`` sounds from ``start``, give or take ``tolerance_s``."""
    sounded = first_sound(capture, start - 0.5)
    assert abs(sounded - start) <= tolerance_s, f"started at {sounded:.4f}, scheduled {start}"
    found = tone_frequency(capture.segment(sounded + 0.1, 0.5), capture.rate)
    assert abs(found - frequency) < frequency * 0.01, f"{found} Hz, expected {frequency} Hz"


def quiet_runs(samples: Samples, threshold: int) -> list[tuple[int, int]]:
    """(offset, frames) of each run of frames whose samples are all of magnitude below
    ``threshold`` (1: exact digital zero)."""
    quiet = np.abs(samples.astype(np.int32)).max(axis=1) < threshold
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    return [(int(begin), int(end - begin)) for begin, end in edges.reshape(-1, 2)]


def silent_runs(capture: Capture, start: float, seconds: float, longer_than_s: float,
                threshold: int = SILENCE) -> list[tuple[float, float]]:
    """(offset from ``start``, length) in seconds of each run of silent frames longer than
    ``longer_than_s`` in the window."""
    begin = capture.index_at(start)
    runs = [(capture.time_of(begin + offset), capture.time_of(begin + offset + frames))
            for offset, frames in quiet_runs(
                capture.samples[begin:capture.index_at(start + seconds)], threshold)]
    return [(first - start, end - first) for first, end in runs if end - first > longer_than_s]


def rms_dbfs(segment: Samples) -> float:
    """RMS level relative to full scale; -inf for digital silence or an empty segment."""
    if segment.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(segment.astype(np.float64)))))
    return 20 * math.log10(rms / FULL_SCALE) if rms > 0 else -math.inf


def tone_frequency(segment: Samples, rate: int) -> float:
    """Frequency in Hz of the strongest spectral peak of the left channel."""
    mono = segment[:, 0].astype(np.float64) if segment.ndim == 2 else segment.astype(np.float64)
    if mono.size < 2:
        raise ValueError("segment too short for a frequency estimate")
    spectrum = np.abs(np.fft.rfft((mono - mono.mean()) * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / rate)[int(np.argmax(spectrum))])


def sounding(samples: Samples, threshold: int = 300) -> npt.NDArray[np.bool_]:
    """Per 10 ms block (48 kHz) of the first channel: True where the block carries sound."""
    blocks = samples[: len(samples) // 480 * 480, 0].reshape(-1, 480)
    loud: npt.NDArray[np.bool_] = np.abs(blocks).max(axis=1) > threshold
    return loud


def max_step(segment: Samples) -> int:
    """Largest sample-to-sample jump on any channel (a click shows up as a big one)."""
    if segment.shape[0] < 2:
        return 0
    return int(np.abs(np.diff(segment.astype(np.int32), axis=0)).max())



def delay_s(reference: npt.NDArray[np.float64], delayed: npt.NDArray[np.float64], rate: int,
            max_lag_s: float) -> float:
    """How much later (0 to ``max_lag_s``) ``delayed`` carries ``reference``: the lag of
    the largest cross-correlation, by FFT. ``reference`` must cover ``delayed`` shifted back
    by up to ``max_lag_s``: reference[i + max_lag] lines up with delayed[i] at lag 0."""
    max_lag = round(max_lag_s * rate)
    n = delayed.size
    size = 1 << (n + reference.size).bit_length()
    spectrum = np.fft.rfft(reference, size).conj() * np.fft.rfft(delayed, size)
    correlation = np.fft.irfft(spectrum, size)
    # correlation[k] = sum_i reference[i] * delayed[i + k], and
    # delayed[i] = reference[i + max_lag - lag]: the peak is at k = lag - max_lag.
    lags = np.array([(-(max_lag - lag)) % size for lag in range(max_lag + 1)])
    return float(np.argmax(correlation[lags])) / rate
