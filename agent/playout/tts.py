"""Text to speech with espeak-ng, rendered once per (voice, text) and cached as WAV.

One thread ("tts") renders: the texts of items about to play first, then the texts of
the schedule ahead of their time. The control thread never waits for espeak-ng: it gets
a :class:`SpokenStream` at once, which decodes the WAV as soon as it is rendered.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.playout.decoder import Decoded, StreamState
from agent.state.durable import publish
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

OpenFile = Callable[[Path], Decoded]  # a decoder of the rendered WAV
SPOKEN, AHEAD = 0, 1  # the tts thread's queue order


class TtsError(RuntimeError):
    pass


class Speech(Protocol):
    """Text to speech as the control loop uses it: :class:`TtsRenderer`, or the in-memory
    one of the simulation (``agent/playout/memory_media.py``)."""

    def speak(self, text: str, lang: str | None, open_file: OpenFile) -> Decoded:
        """The decoded speech of ``text``; never waits for the rendering."""
        ...

    def render_ahead(self, text: str, lang: str | None = None) -> None: ...


class SpokenStream:
    """Speech while it is rendered (the :class:`~agent.playout.decoder.Decoded`
    protocol): no PCM yet, then the decoder of the WAV; ``error`` with espeak-ng's
    message (``render_failed``) when the text could not be rendered."""

    def __init__(self) -> None:
        self._decoded: Decoded | None = None
        self._state: StreamState = "starting"
        self._message = ""
        self._closed = False
        self.render_failed = False

    def attach(self, decoded: Decoded) -> None:
        self._decoded = decoded
        if self._closed:  # closed while it was being rendered
            decoded.close()

    def fail(self, message: str) -> None:
        self._state, self._message, self.render_failed = "error", message, True

    @property
    def state(self) -> StreamState:
        return self._state if self._decoded is None else self._decoded.state

    @property
    def message(self) -> str:
        return self._message if self._decoded is None else self._decoded.message

    @property
    def pcm_bytes(self) -> int:
        return 0 if self._decoded is None else self._decoded.pcm_bytes

    def read(self, max_bytes: int) -> bytes:
        return b"" if self._decoded is None else self._decoded.read(max_bytes)

    def buffered_bytes(self) -> int:
        return 0 if self._decoded is None else self._decoded.buffered_bytes()

    @property
    def finished(self) -> bool:
        if self._decoded is None:
            return self._state in ("error", "killed")
        return self._decoded.finished

    def silent_for(self) -> float:
        """0 while rendering: espeak-ng has its own time limit, and a text that takes long
        to render is not a hung decoder (the card's dead-air watch still sees the wait)."""
        return 0.0 if self._decoded is None else self._decoded.silent_for()

    def close(self) -> None:
        self._closed = True
        if self._decoded is not None:
            self._decoded.close()
        elif self._state == "starting":
            self._state = "killed"


@dataclass(order=True)
class _Rendering:
    order: int
    seq: int
    text: str = field(compare=False)
    lang: str | None = field(compare=False)
    spoken: SpokenStream | None = field(compare=False, default=None)
    open_file: OpenFile | None = field(compare=False, default=None)


class TtsRenderer:
    def __init__(self, cache_dir: Path, voice: str = "vi", engine: str = "espeak-ng") -> None:
        self._dir = cache_dir
        self._voice = voice
        self._engine = engine
        self._lock = threading.Lock()  # one rendering at a time: they share temp names
        self._queue: queue.PriorityQueue[_Rendering] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def speak(self, text: str, lang: str | None, open_file: OpenFile) -> Decoded:
        path = self._path(text, lang)
        if path.exists():
            return open_file(path)
        spoken = SpokenStream()
        self._submit(_Rendering(SPOKEN, next(self._seq), text, lang, spoken, open_file))
        return spoken

    def render_ahead(self, text: str, lang: str | None = None) -> None:
        """Render ``text`` in the background, so that its program starts from the cache."""
        self._submit(_Rendering(AHEAD, next(self._seq), text, lang))

    def _submit(self, rendering: _Rendering) -> None:
        self._queue.put(rendering)
        if self._thread is None:
            # A daemon thread: a wedged espeak-ng never holds up a shutdown.
            self._thread = NamedThread(target=self._render_queued, name="tts", daemon=True)
            self._thread.start()

    def _render_queued(self) -> None:
        while True:
            job = self._queue.get()
            try:
                path = self.render(job.text, job.lang)
            except TtsError as exc:
                log.warning("could not render a text: %s", exc)
                if job.spoken is not None:
                    job.spoken.fail(str(exc))
                continue
            except Exception as exc:  # the thread must outlive any one text
                log.exception("rendering a text failed")
                if job.spoken is not None:
                    job.spoken.fail(f"{self._engine}: {exc!r}")
                continue
            if job.spoken is not None and job.open_file is not None:
                job.spoken.attach(job.open_file(path))

    def _voice_for(self, lang: str | None) -> str:
        return self._voice if lang in (None, "vi") else lang

    def _path(self, text: str, lang: str | None) -> Path:
        digest = hashlib.sha256(f"{self._engine}\0{self._voice_for(lang)}\0{text}".encode()
                                ).hexdigest()
        return self._dir / f"{digest}.wav"

    def render(self, text: str, lang: str | None = None) -> Path:
        """The WAV file speaking ``text`` (rendered now unless cached). Thread-safe."""
        path = self._path(text, lang)
        voice = self._voice_for(lang)
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
