"""What the parts of the control thread share (the loop, the command handler, the
executor, the preparer, the supervisor), and the facts other threads post to it. Only the
control thread touches a ControlState."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.control.ledger import CommandLedger
from agent.control.playback import Playback, item_ref
from agent.core.arbiter import Arbiter
from agent.core.schedule import MediaEntry, Priority, Schedule
from agent.mqtt.commands import Command
from agent.playout.voice import EngineEvent


@dataclass(frozen=True)
class ControlSettings:
    rate: int
    late_start_grace_s: float
    default_volume: int
    emergency_volume: int
    warmup_s: float
    idle_off_s: float
    decoder_hang_s: float
    stream_caching_ms: int
    dead_air_s: float
    dead_air_dbfs: float
    vox_priority: Priority = "live"  # line_in.priority
    vox_chime: bool = False  # line_in.chime


@dataclass
class ControlState:
    settings: ControlSettings
    arbiter: Arbiter
    master_volume: int
    schedule: Schedule | None = None
    playbacks: dict[tuple[str, int], Playback] = field(default_factory=dict)
    ledger: CommandLedger = field(default_factory=CommandLedger)
    vox_key: str | None = None  # the VOX activation while VOX is on
    dirty: bool = False  # Status changed since the last snapshot

    def changed(self) -> None:
        self.dirty = True

    def media_entry(self, media_id: str) -> MediaEntry | None:
        return None if self.schedule is None else self.schedule.media.get(media_id)


@dataclass(frozen=True)
class ScheduleApplied:
    schedule: Schedule


@dataclass(frozen=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True)
class EngineReported:
    event: EngineEvent


@dataclass(frozen=True)
class Reconfigured:
    settings: ControlSettings


@dataclass(frozen=True)
class VoxChanged:
    on: bool  # VOX heard someone start (True) or stop (False) speaking into the line input


Fact = ScheduleApplied | CommandReceived | EngineReported | Reconfigured | VoxChanged


def status_view(state: ControlState, now: float, stamp: Callable[[float], str],
                amplifier_on: bool) -> dict[str, Any]:
    """The ``playing``/``volume``/``amplifier``/``next`` part of Status."""
    playing: dict[str, Any] | None = None
    key = state.arbiter.playing
    pb = state.playbacks.get(key) if key is not None else None
    if pb is not None and pb.started_at is not None:
        fallback = pb.fallback
        on_air = fallback if fallback is not None and fallback.voice is not None else pb
        playing = {"source": on_air.item.kind, "priority": pb.activation.priority,
                   "program_id": pb.activation.program_id, "title": pb.activation.title,
                   "started_at": stamp(pb.started_at), **item_ref(on_air.item)}
    upcoming: list[dict[str, Any]] = []
    if state.schedule is not None:
        for occ in state.schedule.occurrences(now, now + 86400.0):
            if occ.start > now and len(upcoming) < 5:
                upcoming.append({"program_id": occ.program.id, "title": occ.program.title,
                                 "priority": occ.program.priority, "start": stamp(occ.start)})
    return {"playing": playing, "volume": state.master_volume,
            "amplifier": "on" if amplifier_on else "off", "next": upcoming}
