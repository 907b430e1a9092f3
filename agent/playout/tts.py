"""Text to speech with espeak-ng, rendered once per (voice, text) and cached as WAV."""

from __future__ import annotations

import hashlib
import logging
import queue
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from agent.state.durable import publish

log = logging.getLogger(__name__)



class TtsError(RuntimeError):
    pass


class Speech(Protocol):
    """Text to speech as the control loop uses it: :class:`TtsRenderer`, or the in-memory
    one of the simulation (``agent/playout/memory_media.py``)."""

    def render(self, text: str, lang: str | None = None) -> Path: ...

    def render_ahead(self, text: str, lang: str | None = None) -> None: ...


class TtsRenderer:
    def __init__(self, cache_dir: Path, voice: str = "vi", engine: str = "espeak-ng") -> None:
        self._dir = cache_dir
        self._voice = voice
        self._engine = engine
        self._lock = threading.Lock()  # one rendering at a time: they share temp names
        self._ahead: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._ahead_thread: threading.Thread | None = None

    def render_ahead(self, text: str, lang: str | None = None) -> None:
        """Render ``text`` in the background (thread "tts"), so that its program starts
        from the cache. A daemon thread: a wedged espeak-ng never holds up a shutdown."""
        self._ahead.put((text, lang))
        if self._ahead_thread is None:
            self._ahead_thread = threading.Thread(target=self._render_queued, name="tts",
                                                  daemon=True)
            self._ahead_thread.start()

    def _render_queued(self) -> None:
        while True:
            text, lang = self._ahead.get()
            try:
                self.render(text, lang)
            except Exception as exc:  # the thread must outlive any one text
                log.warning("could not render a scheduled text ahead: %r", exc)

    def render(self, text: str, lang: str | None = None) -> Path:
        """The WAV file speaking ``text`` (rendered now unless cached). Thread-safe."""
        voice = self._voice if lang in (None, "vi") else lang
        digest = hashlib.sha256(f"{self._engine}\0{voice}\0{text}".encode()).hexdigest()
        path = self._dir / f"{digest}.wav"
        with self._lock:
            if path.exists():
                return path
            return self._render(text, voice, path)

    def _render(self, text: str, voice: str, path: Path) -> Path:
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        try:
            subprocess.run([self._engine, "-v", voice, "-w", str(tmp), "--", text],
                           check=True, capture_output=True, timeout=60)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            tmp.unlink(missing_ok=True)
            detail = getattr(exc, "stderr", b"") or b""
            raise TtsError(f"{self._engine} failed: {exc} {detail.decode(errors='replace')}"
                           ) from exc
        publish(tmp, path)
        return path
