"""What may play, built from a schedule program or a command: pure functions from the
program or command (and what is known of its media) to an :class:`Activation`."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from agent.core.arbiter import Activation, Item
from agent.core.schedule import (
    LIVE_SOURCES,
    FmSource,
    LineInSource,
    MediaSource,
    Priority,
    Program,
    TtsSource,
)
from agent.core.schedule import StreamSource as StreamProgramSource
from agent.mqtt.commands import Command

MediaLength = Callable[[str], float | None]  # media id -> seconds, None when unknown
LINE_IN_ITEM = Item("line_in", "")  # live: on air until its window ends (or VOX ends it)
VOX_PREFIX = "vox:"


def program_activation(program: Program, start: float, end: float | None, key: str,
                       media_length: MediaLength) -> Activation:
    src = program.source
    items: list[Item]
    if isinstance(src, MediaSource):
        items = [Item("media", m, media_length(m)) for m in src.items]
    elif isinstance(src, TtsSource):
        items = [Item("tts", src.text, lang=src.lang)]
    elif isinstance(src, StreamProgramSource):
        items = [Item("stream", src.url, program.duration_s)]
    elif isinstance(src, LineInSource):
        items = [LINE_IN_ITEM]
    else:
        assert isinstance(src, FmSource)
        items = [Item("fm", str(src.frequency_mhz), program.duration_s)]
    per_repeat = len(items)
    if not isinstance(src, LIVE_SOURCES):
        items = items * program.repeat
    return Activation(key=key, program_id=program.id, title=program.title,
                      priority=program.priority, items=tuple(items), start=start, end=end,
                      volume=program.volume, chime=program.chime,
                      items_per_repeat=per_repeat, repeat_gap_s=program.repeat_gap_s)


def command_activation(cmd: Command, now: float, emergency_volume: int,
                       media_length: MediaLength, cached: Callable[[str], bool]
                       ) -> Activation:
    """The activation of a play command (emergency, play_now, fm_relay, line_in). A ``media_id``
    that is not cached plays from the command's ``url`` when it has one (mqtt.md)."""
    args = cmd.args
    priority = args.get("priority", "emergency" if cmd.type == "emergency" else "live")
    repeat = int(args.get("repeat", 1))
    # start_at (mqtt.md): the first sample on that instant, as a scheduled start's.
    start = max(now, float(args.get("start_at", now)))
    end = None
    if cmd.type == "fm_relay":
        items = [Item("fm", str(float(args["frequency_mhz"])), float(args["duration_s"]))]
        end = start + float(args["duration_s"])
    elif cmd.type == "line_in":
        items = [LINE_IN_ITEM]
        end = start + float(args["duration_s"])
    elif "text" in args:
        items = [Item("tts", str(args["text"]))] * repeat
    elif "media_id" in args and ("url" not in args or cached(args["media_id"])):
        media_id = str(args["media_id"])
        items = [Item("media", media_id, media_length(media_id))] * repeat
    else:
        url = str(args["url"])
        # play_now of a url alone relays it live; a url standing in for a media_id that is
        # not cached is that media's file, which ends (relayed live, it aired again at
        # every retry of the "dead" stream, and the command never ended).
        streamed = cmd.type == "play_now" and "media_id" not in args
        items = [Item("stream" if streamed else "media", url)] * repeat
    emergency = priority == "emergency"
    volume = args.get("volume", emergency_volume if emergency else None)
    return Activation(key=f"cmd:{cmd.id}", program_id=f"cmd:{cmd.id}",
                      title=f"{cmd.type} command", priority=priority, items=tuple(items),
                      start=start, end=end, volume=None if volume is None else int(volume),
                      absolute_volume=emergency, chime=cmd.type == "emergency")


def vox_activation(now: float, priority: Priority, chime: bool) -> Activation:
    """The line input on air because VOX heard someone speak: until VOX hears them stop
    (the control loop then ends its item), at ``line_in.priority``."""
    key = f"{VOX_PREFIX}{uuid.uuid4()}"
    return Activation(key=key, program_id=key, title="VOX", priority=priority,
                      items=(LINE_IN_ITEM,), start=now, chime=chime)
