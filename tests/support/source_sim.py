"""Content for the source-system simulator (tests.support.simulator) in tests and the demo.

A content directory holds ``schedule.json`` and ``media/<media_id>``; these helpers write
them and return the schedule pieces that describe them.
"""

from __future__ import annotations

import hashlib
import json
import random
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.clock import ManualClock
from agent.core.faults import FaultRegistry
from agent.source.cache import MediaCache
from agent.source.client import SourceClient, SourceSettings
from agent.state.journal import Journal
from agent.state.store import StateStore
from tests.support.schemas import validate
from tests.support.simulator import SourceSimulator

DEVICE = "xa-phu-loc-cum-01"
TOKEN = "s3cret-token"


def media_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes (the cache does not decode media)."""
    return random.Random(seed).randbytes(size)


def add_media(directory: Path, media_id: str, content: Path | bytes, *,
              duration_s: float | None = None, url: str | None = None,
              mime: str = "audio/mpeg", title: str = "") -> dict[str, Any]:
    """Publish a media file and return its schedule media entry.

    ``content`` is a file to copy or the bytes themselves. The duration of a WAV file is
    read from its header; other content needs ``duration_s``.
    """
    data = content.read_bytes() if isinstance(content, Path) else content
    if duration_s is None:
        if not isinstance(content, Path) or content.suffix.lower() != ".wav":
            raise ValueError(f"{media_id}: give duration_s for content that is not a WAV file")
        with wave.open(str(content), "rb") as w:
            duration_s = w.getnframes() / w.getframerate()
        mime = "audio/wav"
    media_dir = Path(directory) / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    (media_dir / media_id).write_bytes(data)
    return {"id": media_id, "url": url or f"/api/v1/media/{media_id}",
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "duration_s": duration_s, "title": title or media_id, "mime": mime}


def schedule_doc(version: int, device_id: str, media: list[dict[str, Any]], *,
                 start: str = "06:00:00", extra_programs: list[dict[str, Any]] | None = None,
                 timezone: str = "Asia/Ho_Chi_Minh") -> dict[str, Any]:
    """A schedule playing all ``media`` every day at ``start`` (one program ``p-1``)."""
    programs: list[dict[str, Any]] = []
    if media:
        programs.append({"id": "p-1", "title": "Bản tin", "priority": "scheduled",
                         "source": {"type": "media", "items": [m["id"] for m in media]},
                         "start": start})
    return {"version": version, "device_id": device_id, "timezone": timezone,
            "media": media, "programs": programs + (extra_programs or [])}


def write_schedule(directory: Path, doc: dict[str, Any], *, check: bool = True) -> bytes:
    """Publish ``doc`` as the device's schedule (checked against the contract's schema
    unless ``check`` is False, for deliberately broken documents); returns the body."""
    if check:
        validate("schedule", doc)
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    path = Path(directory) / "schedule.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    tmp.replace(path)
    return body


@dataclass
class SourceRig:
    """A simulator serving ``content`` and the agent-side parts that talk to it."""

    content: Path
    sim: SourceSimulator
    store: StateStore
    clock: ManualClock
    faults: FaultRegistry
    journal: Journal
    client: SourceClient
    cache_dir: Path

    def cache(self, max_bytes: int = 100_000_000) -> MediaCache:
        return MediaCache(self.store, self.cache_dir, max_bytes, self.clock, self.faults)

    def raised(self) -> dict[str, str]:
        return {f.code: f.message for f in self.faults.active()}


@contextmanager
def source_rig(tmp_path: Path, *, device_id: str = DEVICE, token: str | None = TOKEN,
               signing_key: Ed25519PrivateKey | None = None, public_key: bytes | None = None,
               client_token: str | None = TOKEN, read_timeout_s: float = 5.0,
               cache_dir: Path | None = None, **settings: Any) -> Iterator[SourceRig]:
    """``settings``: further SourceSettings fields (bounds and deadlines)."""
    content = tmp_path / "content"
    content.mkdir(exist_ok=True)
    sim = SourceSimulator(content, device_id, token, signing_key=signing_key).start()
    store = StateStore(tmp_path / "state" / "agent.db")
    clock = ManualClock()
    faults = FaultRegistry(clock.now)
    client = SourceClient(SourceSettings(url=sim.url, device_id=device_id, token=client_token,
                                         public_key=public_key, connect_timeout_s=2.0,
                                         read_timeout_s=read_timeout_s, **settings))
    try:
        yield SourceRig(content, sim, store, clock, faults,
                        Journal(store, clock, ZoneInfo("Asia/Ho_Chi_Minh")), client,
                        cache_dir or tmp_path / "cache")
    finally:
        client.close()
        sim.stop()
        store.close()
