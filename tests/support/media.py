"""Test media made locally with the real tools: sox tones, lame MP3, Vorbis OGG, espeak-ng.

Every function writes ``path`` and returns it. Tones are stereo, 16 bit, 48 kHz unless
told otherwise; ``level_dbfs`` is the sine's peak level (its RMS is 3.01 dB lower).
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.support.wavfile import Samples, rms_dbfs

RATE = 48000


def run_tool(argv: list[str]) -> None:
    """Run a media tool (sox, lame, espeak-ng); its stderr in the error when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")


def tones(path: Path, segments: Sequence[tuple[float, float]], level_dbfs: float = -6.0,
          rate: int = RATE) -> Path:
    """A WAV of consecutive sines, each ``(frequency_hz, seconds)``."""
    parts = [arg for freq, seconds in segments
             for arg in ("synth", f"{seconds}", "sine", f"{freq}", ":")]
    run_tool(["sox", "-n", "-r", str(rate), "-c", "2", "-b", "16", str(path), *parts[:-1],
          "vol", f"{10 ** (level_dbfs / 20):.6f}"])
    return path


def tone(path: Path, frequency_hz: float, seconds: float, level_dbfs: float = -6.0,
         rate: int = RATE) -> Path:
    """A WAV sine of ``seconds`` at ``frequency_hz``."""
    return tones(path, [(frequency_hz, seconds)], level_dbfs, rate)


def pink_noise(path: Path, seconds: float, level: float = 0.3, rate: int = RATE) -> Path:
    """A WAV of pink noise at sox's ``vol`` ``level`` (a full spectrum: the worst case for
    a decoder or an encoder, unlike a tone)."""
    run_tool(["sox", "-n", "-r", str(rate), "-c", "2", "-b", "16", str(path), "synth",
              f"{seconds}", "pinknoise", "vol", f"{level}"])
    return path


def to_mp3(wav: Path, path: Path, kbit_s: int = 128) -> Path:
    """``wav`` encoded by lame at a constant ``kbit_s``."""
    run_tool(["lame", "--quiet", "--cbr", "-b", str(kbit_s), str(wav), str(path)])
    return path


def to_ogg(wav: Path, path: Path) -> Path:
    """``wav`` encoded as Ogg Vorbis by sox."""
    run_tool(["sox", str(wav), "-C", "5", str(path)])
    return path


def speech(path: Path, text: str, voice: str = "vi", rate: int | None = None) -> Path:
    """``text`` spoken by espeak-ng into a WAV (at espeak-ng's own rate, 22050 Hz, unless
    ``rate`` is given: then converted by sox)."""
    if rate is None:
        run_tool(["espeak-ng", "-v", voice, "-w", str(path), text])
        return path
    spoken = path.with_name(f"{path.stem}.espeak.wav")
    run_tool(["espeak-ng", "-v", voice, "-w", str(spoken), text])
    run_tool(["sox", str(spoken), "-r", str(rate), "-b", "16", str(path)])
    return path


def read_wav(path: Path) -> tuple[Samples, int]:
    """The frames of a 16-bit PCM WAV as (frames, channels) int16, and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels()), w.getframerate()


def wav_rms_dbfs(path: Path) -> float:
    """RMS level of a whole WAV file relative to full scale."""
    return rms_dbfs(read_wav(path)[0])


def write_frames(path: Path, frames: Samples, rate: int = RATE) -> Path:
    """A 16-bit PCM WAV of ``frames`` (frames, channels), e.g. a line input's "capture"."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())
    return path


def noise(seconds: float, level_dbfs: float, seed: int = 1, rate: int = RATE) -> Samples:
    """Mono white noise of RMS ``level_dbfs`` (a microphone's hiss), as (frames, 1)."""
    rms = 32768 * 10 ** (level_dbfs / 20)
    generator = np.random.default_rng(seed)
    return np.clip(generator.normal(0, rms, (round(seconds * rate), 1)), -32768, 32767
                   ).astype(np.int16)
