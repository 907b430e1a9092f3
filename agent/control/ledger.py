"""The lifecycle of play commands: accepted, then ``completed`` or ``failed`` once their
activation is over. A pure decider: the control loop tells it what happened and sends the
acks it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.mqtt.commands import Command
from agent.state.store import StateStore


@dataclass(frozen=True)
class Settled:
    command: Command
    status: str  # completed | failed
    reason: str | None


@dataclass
class CommandLedger:
    _open: dict[str, Command] = field(default_factory=dict)  # activation key -> command
    _failures: dict[str, int] = field(default_factory=dict)

    def open(self, key: str, command: Command) -> None:
        self._open[key] = command

    def __contains__(self, key: str) -> bool:
        return key in self._open

    def item_failed(self, key: str) -> None:
        if key in self._open:
            self._failures[key] = self._failures.get(key, 0) + 1

    def drop(self, key: str) -> None:
        """Forget a command that was already acked (it could not be carried out at all)."""
        self._open.pop(key, None)
        self._failures.pop(key, None)

    def settle(self, live: set[str]) -> list[Settled]:
        """The final ack of every command whose activation is no longer ``live``: failed
        when every item it asked for failed, completed otherwise."""
        settled = []
        for key in [k for k in self._open if k not in live]:
            command = self._open.pop(key)
            failures = self._failures.pop(key, 0)
            items = 1 if command.type == "fm_relay" else int(command.args.get("repeat", 1))
            if failures >= items:
                settled.append(Settled(command, "failed", "play_failed: nothing could be played"))
            else:
                settled.append(Settled(command, "completed", None))
        return settled


class OpenCommands:
    """The play commands accepted and not ended yet, kept in the StateStore: a command
    cut by a restart or a power cut cannot end by itself, so the next start fails it.
    Written after each final ack: a power cut between the two repeats that ack as
    ``failed`` (at least once, never lost)."""

    KEY = "control.open_commands"

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def opened(self, command: Command) -> None:
        self._store.put(self.KEY, {**self._store.get(self.KEY, {}), command.id: command.type})

    def ended(self, command: Command) -> None:
        left: dict[str, str] = self._store.get(self.KEY, {})
        if left.pop(command.id, None) is not None:
            self._store.put(self.KEY, left)

    def cut_by_restart(self) -> dict[str, str]:
        """Command id -> type of the commands left open by the last run; forgotten."""
        left: dict[str, str] = self._store.get(self.KEY, {})
        self._store.delete(self.KEY)
        return left
