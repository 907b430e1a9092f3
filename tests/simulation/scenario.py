"""Scripted field sequences: one :class:`Simulation` driven event by event, with what the
agent sent (acks, MQTT events, reports to the source) and what the card carried at hand.

The tests of one behaviour of the control logic (which item plays, which outcome, ack or
fault is reported) use it instead of a real agent process and real time; the invariants of
the simulation are still checked after every step, and over the whole run by
:meth:`Scenario.end`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from agent.control.playback import Playback
from agent.core.faults import Fault
from agent.state.store import REJECTED_ACK
from tests.simulation import events as ev
from tests.simulation.simulation import TICK_S, Simulation

T = TypeVar("T")


class Scenario(Simulation):
    def do(self, *events: ev.Event) -> None:
        """Each event, then one turn of the control loop."""
        for event in events:
            self.apply(event)
            self.step()

    def send_command(self, type_: str, **args: Any) -> str:
        """A command over MQTT (``start_at`` in seconds from now); returns its id."""
        self.do(ev.Send(type_, args))
        return f"c{self.commands}"

    def until(self, predicate: Callable[[], T | None], within_s: float, what: str) -> T:
        """Turns of the control loop, every ``TICK_S`` of simulated time, until
        ``predicate`` holds; its value."""
        end = self.world.clock.monotonic() + within_s
        while not (value := predicate()):
            if self.world.clock.monotonic() >= end:
                raise AssertionError(f"no {what} within {within_s} s")
            self.wait(TICK_S)
        return value

    def end(self) -> None:
        """Every command ends, a clean stop, and the whole-run invariants."""
        self.finish()

    # --- what the agent says -------------------------------------------------------------
    def acks(self, command_id: str) -> list[dict[str, Any]]:
        return [r.payload for r in self.sent
                if r.kind in ("ack", REJECTED_ACK) and r.payload["command_id"] == command_id]

    def statuses(self, command_id: str) -> list[str]:
        return [ack["status"] for ack in self.acks(command_id)]

    def mqtt_events(self, type_: str) -> list[dict[str, Any]]:
        return [r.payload for r in self.sent if r.kind == f"event:{type_}"]

    def plays(self, program_id: str | None = None) -> list[dict[str, Any]]:
        """Play reports to the source, in the order they were written."""
        return [r.payload for r in self.sent if r.kind == "play"
                and program_id in (None, r.payload["program_id"])]

    def until_plays(self, count: int, within_s: float,
                    program_id: str | None = None) -> list[dict[str, Any]]:
        """The play reports (of ``program_id``) once there are ``count`` of them."""
        return self.until(lambda: self.plays(program_id)
                          if len(self.plays(program_id)) >= count else None,
                          within_s, f"{count} play reports")

    def fault(self, code: str) -> Fault | None:
        return next((f for f in self.boot.faults.active() if f.code == code), None)

    def playing(self) -> dict[str, Any] | None:
        playing: dict[str, Any] | None = self.boot.loop.snapshot()["playing"]
        return playing

    def on_air(self, program_id: str) -> dict[str, Any] | None:
        playing = self.playing()
        return playing if playing is not None and playing["program_id"] == program_id \
            else None

    # --- what the card carried -----------------------------------------------------------
    def aired(self) -> list[tuple[str, int]]:
        """(program id, item index) of every voice of a play the card carried a frame of,
        in the order they sounded (chimes and FM fallbacks named as such)."""
        aired: list[tuple[str, int]] = []
        for boot in self.boots:
            for entry in boot.engine.history:
                pb = entry.voice.tag
                if not isinstance(pb, Playback) or entry.voice.frames_played == 0:
                    continue
                name = pb.activation.program_id
                if entry.voice is pb.chime:
                    name = f"chime:{name}"
                elif entry.voice.name.startswith("fallback:"):
                    name = f"fallback:{name}"
                aired.append((name, pb.index))
        return aired

    def loud_s(self, program_id: str) -> float:
        """Seconds of sound (not digital silence) the card carried for ``program_id``."""
        return sum(entry.loud_frames for boot in self.boots for entry in boot.engine.history
                   if isinstance(entry.voice.tag, Playback)
                   and entry.voice.tag.activation.program_id == program_id) \
            / self.boot.engine.rate


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()
