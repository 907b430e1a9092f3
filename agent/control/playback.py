"""What the control loop tracks about each item it asked the engine to play.

A Playback is one item of one activation: its voice(s) in the engine, the decoder or
tuner behind them, and the proof-of-play record it becomes when it ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from agent.control.activations import VOX_PREFIX
from agent.control.vox import block_rms
from agent.core.arbiter import Activation, Item, Outcome
from agent.core.clock import Clock
from agent.playout.decoder import Decoded
from agent.playout.fm_tuner import TunerLease
from agent.playout.line_in import LineInLease
from agent.playout.voice import Voice

SOURCE_OF_KIND = {"media": "media", "stream": "stream", "fm": "fm", "tts": "tts",
                  "line_in": "line_in"}


class LevelMeter:
    """Wraps a PCM source and remembers when it last carried sound (dead-air detection).

    Quiet time counts from the first read (a probe) or from going on air, whichever is
    later: a stream pre-rolled seconds ahead of its start (whose first read, the encoder's
    leading silence, came then) is not dead when it starts.
    """

    # Metered as it is read: read no further ahead of the card than this
    # (agent.playout.feed), or the air would be called dead before it is.
    max_ahead_s = 0.040

    def __init__(self, inner: Any, clock: Clock, threshold_dbfs: float) -> None:
        self.inner = inner
        self._clock = clock
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._quiet_since: float | None = None  # None: never read
        self.last_loud: float | None = None

    def read(self, max_bytes: int) -> bytes:
        data: bytes = self.inner.read(max_bytes)
        now = self._clock.monotonic()
        if self._quiet_since is None:
            self._quiet_since = now
        if len(data) >= 2 and block_rms(data) >= self._threshold:
            self.last_loud = self._quiet_since = now
        return data

    @property
    def finished(self) -> bool:
        return bool(self.inner.finished)

    @property
    def heard(self) -> bool:
        """The source has carried sound at least once."""
        return self.last_loud is not None

    def went_on_air(self) -> None:
        self._quiet_since = self._clock.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the source last carried sound (or was first read)."""
        if self._quiet_since is None:
            return 0.0
        return self._clock.monotonic() - self._quiet_since


@dataclass
class Playback:
    activation: Activation
    index: int
    item: Item
    offset_s: float
    mrl: str | None = None
    sha256: str | None = None
    voice: Voice | None = None
    chime: Voice | None = None
    stream: Decoded | None = None
    meter: LevelMeter | None = None
    started_at: float | None = None
    ended_at: float | None = None
    played_frames: int = 0
    outcome: Outcome | None = None
    voice_ended: bool = False
    restarts: int = 0
    lease: TunerLease | LineInLease | None = None  # a relay's hold on the tuner or input
    fallback: Playback | None = None  # FM relayed while a stream is dead
    retired_voices: list[Voice] = field(default_factory=list)
    report_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def key(self) -> tuple[str, int]:
        return (self.activation.key, self.index)

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def owns(self, voice: Voice) -> bool:
        return voice is self.voice or voice is self.chime or voice in self.retired_voices

    def record(self, stamp: Any, rate: int) -> dict[str, Any]:
        """The proof-of-play record of source-api.md."""
        a, item = self.activation, self.item
        started_at, frames = self.started_at, self.played_frames
        if self.lease is not None and self.lease.relayed_frames and started_at is not None:
            # What left the card of the station itself: not the silence while tuning.
            started_at += self.lease.lead_frames / rate
            frames = self.lease.relayed_frames
        record: dict[str, Any] = {
            "id": self.report_id,
            "program_id": a.program_id,
            "source": SOURCE_OF_KIND[item.kind],
            "priority": a.priority,
            "title": a.title,
            "started_at": stamp(started_at),
            "ended_at": stamp(self.ended_at if self.ended_at is not None else started_at),
            "played_s": round(frames / rate, 3),
            "outcome": self.outcome or "completed",
        }
        record.update(item_ref(item))
        if item.kind == "media" and self.sha256:
            record["sha256"] = self.sha256
        return record


def item_ref(item: Item) -> dict[str, Any]:
    """The field that names what an item plays, as records and Status carry it."""
    if item.kind == "media" and not item.ref.startswith(("http://", "https://")):
        return {"media_id": item.ref}
    if item.kind in ("media", "stream"):
        return {"url": item.ref}
    if item.kind == "fm":
        return {"frequency_mhz": float(item.ref)}
    if item.kind == "line_in":
        return {}
    return {"text": item.ref}


def line_in_fields(pb: Playback) -> dict[str, Any]:
    """What the line_in_on/line_in_off events say about the relay."""
    key = pb.activation.key
    trigger = "vox" if key.startswith(VOX_PREFIX) else "command" if key.startswith("cmd:") \
        else "schedule"
    return {"program_id": pb.activation.program_id, "priority": pb.activation.priority,
            "trigger": trigger}


def relayed_station(pb: Playback) -> bool:
    """False for a relay that never carried its source's own sound (FM with no dongle or
    squelched all along, a stream silent or dead from its start): its proof of play must
    not claim it was on air."""
    if pb.lease is not None:
        return pb.lease.carried_sound
    if pb.item.kind == "stream":
        return pb.meter is not None and pb.meter.heard
    return True
