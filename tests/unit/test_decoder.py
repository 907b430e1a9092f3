"""The libvlc worker processes: what comes out of them is the media, sample for sample."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from agent.playout.decoder import DecodedStream, DecoderPool
from tests.support.media import read_wav, tones


def decode(decoder_pool: DecoderPool, path: Path) -> tuple[DecodedStream, np.ndarray]:
    stream = decoder_pool.open(str(path))
    chunks = []
    deadline = time.monotonic() + 20
    while not stream.finished and time.monotonic() < deadline:
        chunks.append(stream.read(1 << 20))
        time.sleep(0.01)
    stream.close()
    return stream, np.frombuffer(b"".join(chunks), dtype="<i2").reshape(-1, 2)



def test_48k_media_comes_out_bit_exact(tmp_path: Path, decoder_pool: DecoderPool) -> None:
    wav = tones(tmp_path / "a.wav", [(600, 1.0), (800, 1.0)])
    stream, pcm = decode(decoder_pool, wav)
    source, _ = read_wav(wav)
    assert stream.state == "ended"
    assert np.array_equal(pcm, source), "48 kHz audio must pass untouched, last sample too"


@pytest.mark.parametrize("rate", [22050, 44100])
def test_other_rates_are_resampled_without_repeated_samples(
        tmp_path: Path, decoder_pool: DecoderPool, rate: int) -> None:
    wav = tones(tmp_path / "b.wav", [(800, 2.0)], rate=rate)
    _, pcm = decode(decoder_pool, wav)
    # 2 s at 48 kHz; libvlc does not flush the resampler's last few tens of ms at the end
    # (espeak's trailing silence, for TTS at 22.05 kHz).
    assert 96000 - 2400 < len(pcm) <= 96000
    left = pcm[:, 0].astype(np.int32)
    loud = np.abs(left[1:]) > 2000
    repeated = float(np.mean((left[1:] == left[:-1])[loud]))
    assert repeated < 0.01, f"{repeated:.0%} of samples repeat their neighbour: a crude resampler"


def test_a_missing_file_fails_cleanly(tmp_path: Path, decoder_pool: DecoderPool) -> None:
    stream, pcm = decode(decoder_pool, tmp_path / "nothing.mp3")
    assert stream.state == "error" and len(pcm) == 0
