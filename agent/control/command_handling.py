"""Commands on the control thread: carried out, then acked (mqtt.md).

A play command (``emergency``, ``play_now``, ``fm_relay``, ``line_in``) becomes an
activation for the arbiter and is acked ``completed`` or ``failed`` once that activation is
over; the others act at once and are acked then. The play commands not ended yet are kept
in the StateStore (:class:`~agent.control.ledger.OpenCommands`), so that the next start
fails those a restart or a power cut cut off.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.control.activations import command_activation
from agent.control.amplifier import AmplifierPolicy, AmplifierSwitch
from agent.control.executor import Executor
from agent.control.ledger import OpenCommands
from agent.control.preparation import Preparer
from agent.control.state import ControlState
from agent.core.arbiter import Item
from agent.core.clock import Clock
from agent.mqtt.commands import Command
from agent.state.journal import Journal
from agent.state.store import StateStore


class CommandHandler:
    def __init__(self, state: ControlState, executor: Executor, preparer: Preparer, *,
                 clock: Clock, amp: AmplifierSwitch, amp_policy: AmplifierPolicy,
                 journal: Journal, store: StateStore,
                 media_duration: Callable[[str], float | None],
                 set_volume: Callable[[int], None], sync_now: Callable[[], None],
                 count_command: Callable[[str, str], None]) -> None:
        self._state = state
        self._executor = executor
        self._preparer = preparer
        self._clock = clock
        self._amp = amp
        self._amp_policy = amp_policy
        self._journal = journal
        self._open_commands = OpenCommands(store)
        self._media_duration = media_duration
        self._set_volume = set_volume
        self._sync_now = sync_now
        self._count_command = count_command  # (type, completed|failed) for the metrics

    def fail_cut_by_restart(self) -> None:
        """Ack ``failed`` the play commands the last run left open (a restart or a power
        cut ended it before them)."""
        for command_id, command_type in self._open_commands.cut_by_restart().items():
            self._journal.ack(command_id, "failed", "interrupted: the agent restarted")
            self._count_command(command_type, "failed")

    def execute(self, cmd: Command) -> None:
        now = self._clock.now()
        args = cmd.args
        if cmd.type in ("emergency", "play_now", "fm_relay", "line_in"):
            activation = command_activation(
                cmd, now, self._state.settings.emergency_volume, self._media_duration,
                lambda media_id: self._preparer.preparable(Item("media", media_id)))
            self._amp_policy.forced = None  # forced power lasts until the next play
            self._state.ledger.open(activation.key, cmd)
            self._open_commands.opened(cmd)
            self._state.arbiter.add(activation, now)
            self._executor.carry_out(self._state.arbiter.evaluate(now), now)
            return
        if cmd.type == "stop":
            self._state.arbiter.stop(args.get("priority"), now)
            self._executor.carry_out(self._state.arbiter.evaluate(now), now)
        elif cmd.type == "set_volume":
            self._set_volume(int(args["volume"]))
        elif cmd.type == "sync_now":
            self._sync_now()
        elif cmd.type == "amplifier":
            self._amp_policy.forced = bool(args["on"])
            self._amp.set(self._amp_policy.forced)
        self._ack(cmd, "completed")
        self._state.changed()

    def could_not_execute(self, cmd: Command, exc: Exception) -> None:
        """The command failed while being carried out: it fails, and with it whatever of
        it the arbiter already had."""
        key = f"cmd:{cmd.id}"
        playing = self._state.arbiter.playing
        if playing is not None and playing[0] == key:
            self._executor.contain(key, playing[1], exc)
        self._state.ledger.drop(key)
        self._state.arbiter.remove(key)
        self._ack(cmd, "failed", f"play_failed: {exc!r}"[:200])

    def settle(self) -> None:
        """Ack completed/failed for every command whose activation is over."""
        live = self._state.arbiter.keys() | {k for k, _ in self._state.playbacks}
        for settled in self._state.ledger.settle(live):
            self._ack(settled.command, settled.status, settled.reason)

    def _ack(self, cmd: Command, status: str, reason: str | None = None) -> None:
        self._journal.ack(cmd.id, status, reason)
        self._count_command(cmd.type, status)
        self._open_commands.ended(cmd)
