"""The libvlc worker processes: what comes out of them is the media, sample for sample."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.playout.decoder import DecodedStream, DecoderPool
from agent.playout.decoder_worker import FILE_PCM_BATCH_S, STREAM_PCM_BATCH_S, pcm_batch_s
from agent.playout.framing import PCM, STATE, read_frame
from tests.support.media import read_wav, to_mp3, tones


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


def test_the_worker_sends_a_files_pcm_in_frames_of_a_quarter_second(tmp_path: Path) -> None:
    """One frame per libvlc callback (an MP3 frame, 26 ms) woke the agent's reader about
    40 times a second; frames of FILE_PCM_BATCH_S carry the same samples, in order."""
    wav = tones(tmp_path / "c.wav", [(600, 1.0), (800, 1.0)])
    mp3 = to_mp3(wav, tmp_path / "c.mp3", 128)
    worker = subprocess.Popen([sys.executable, "-m", "agent.playout.decoder_worker"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps({"mrl": mp3.as_uri(), "rate": 48000}).encode() + b"\n")
    worker.stdin.flush()
    frames = []
    while (frame := read_frame(worker.stdout)) is not None:  # type: ignore[arg-type]
        frames.append(frame)
    worker.stdin.close()
    assert worker.wait(10) == 0
    pcm = [payload for kind, payload in frames if kind == PCM]
    states = [json.loads(payload)["state"] for kind, payload in frames if kind == STATE]
    assert states[-1] == "ended"
    assert abs(sum(map(len, pcm)) - 2 * 48000 * 4) < 0.1 * 48000 * 4  # the MP3's 2 s
    batch_bytes = FILE_PCM_BATCH_S * 48000 * 4
    assert len(pcm) <= 2.0 / FILE_PCM_BATCH_S + 2
    assert sorted(map(len, pcm))[len(pcm) // 2] >= 0.8 * batch_bytes


def test_a_stream_decoded_only_its_caching_ahead_goes_out_in_shorter_frames() -> None:
    for local in ("/var/lib/broadcast-agent/media/3f9a.mp3",
                  "file:///var/lib/broadcast-agent/media/3f9a.mp3"):
        assert pcm_batch_s(local) == FILE_PCM_BATCH_S
    for mrl in ("http://radio.example/live.mp3", "https://radio.example/live",
                "rtsp://radio.example/live"):
        assert pcm_batch_s(mrl) == STREAM_PCM_BATCH_S < FILE_PCM_BATCH_S
