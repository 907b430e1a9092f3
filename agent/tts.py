"""Text to speech with espeak-ng, rendered once per (voice, text) and cached as WAV."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from agent.durable import publish

VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")


class TtsError(RuntimeError):
    pass


class TtsRenderer:
    def __init__(self, cache_dir: Path, voice: str = "vi", engine: str = "espeak-ng") -> None:
        self._dir = cache_dir
        self._voice = voice
        self._engine = engine

    def render(self, text: str, lang: str | None = None) -> Path:
        """The WAV file speaking ``text`` (rendered now unless cached)."""
        voice = self._voice if lang in (None, "vi") else lang
        digest = hashlib.sha256(f"{self._engine}\0{voice}\0{text}".encode()).hexdigest()
        path = self._dir / f"{digest}.wav"
        if path.exists():
            return path
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        try:
            subprocess.run([self._engine, "-v", voice, "-w", str(tmp), "--", text],
                           check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            tmp.unlink(missing_ok=True)
            detail = getattr(exc, "stderr", b"") or b""
            raise TtsError(f"{self._engine} failed: {exc} {detail.decode(errors='replace')}"
                           ) from exc
        publish(tmp, path)
        return path
