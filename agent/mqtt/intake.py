"""Commands on their way from MQTT to the control loop: screened on paho's network thread,
held off it while the clock is untrusted, judged, acknowledged.

Rejections are cheap (mqtt.md, Ack): nothing is written per rejection on the network
thread. Their acks are buffered and written in batches, at most ``REJECTION_ACKS_PER_FLUSH``
every ``REJECTION_FLUSH_S`` in one transaction, under the outbox kind that is dropped
first and sent last; past ``MAX_PENDING_REJECTIONS`` buffered, further rejections are
counted (metric ``agent_commands_dropped_total``) but not acked. One log line per batch.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable

from agent.core.clock import Clock
from agent.core.clock_trust import ClockTrust
from agent.core.faults import FaultRegistry
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import CLOCK_FREE_TYPES, Command, CommandValidator, Rejection
from agent.state.journal import Journal
from drivers.thread import NamedThread

log = logging.getLogger(__name__)

MAX_WAITING = 100  # commands waiting for a trusted clock; more are rejected clock_unsynced
REJECTION_FLUSH_S = 0.5
REJECTION_ACKS_PER_FLUSH = 25
MAX_PENDING_REJECTIONS = 500


class CommandIntake:
    def __init__(self, validator: CommandValidator, journal: Journal, metrics: AgentMetrics,
                 faults: FaultRegistry, clock: Clock, on_command: Callable[[Command], None],
                 trust: ClockTrust | None, clock_wait_s: float) -> None:
        self._validator = validator
        self._journal = journal
        self._metrics = metrics
        self._faults = faults
        self._clock = clock
        self._on_command = on_command
        self._trust = trust
        self._clock_wait_s = clock_wait_s
        self._lock = threading.Condition()
        self._waiting: deque[tuple[float, Command]] = deque()  # (monotonic deadline, command)
        self._undecided = 0  # held or being judged
        self._rejections: list[tuple[str, str, float]] = []  # (command id, reason, at)
        self._rejected: Counter[str] = Counter()  # codes since the last flush
        self._dropped = 0
        self._last_flush = float("-inf")
        self._stopping = False
        self._thread: threading.Thread | None = None
        if trust is not None:
            trust.subscribe(self._poke)

    def start(self) -> None:
        self._stopping = False
        self._thread = NamedThread(target=self._hold, name="mqtt-clock-wait", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._trust is not None:
            self._trust.unsubscribe(self._poke)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        """Commands held for a trusted clock and not judged yet."""
        with self._lock:
            return self._undecided

    # --- paho's network thread ----------------------------------------------------------
    def handle(self, payload: bytes) -> None:
        screened = self._validator.screen(payload)
        if isinstance(screened, Rejection):
            self._reject(screened)
            return
        trusted = self._trust is None or self._trust.trusted
        if trusted or screened.type in CLOCK_FREE_TYPES:
            self._decide(screened, trusted)
            return
        with self._lock:
            full = len(self._waiting) >= MAX_WAITING
            if not full:
                self._waiting.append((self._clock.monotonic() + self._clock_wait_s, screened))
                self._undecided += 1
                self._lock.notify_all()
        if full:
            self._decide(screened, trusted=False)
        else:
            log.info("command %s (%s) waits up to %g s for a trusted clock", screened.id,
                     screened.type, self._clock_wait_s)

    # --- the mqtt-clock-wait thread -------------------------------------------------------
    def _poke(self, _trusted: bool = True) -> None:
        with self._lock:
            self._lock.notify_all()

    def _hold(self) -> None:
        while True:
            with self._lock:
                ready, trusted = self._due()
                while not (self._stopping or ready):
                    earliest = self._waiting[0][0] if self._waiting else None
                    self._lock.wait(None if earliest is None
                                    else max(0.0, earliest - self._clock.monotonic()))
                    ready, trusted = self._due()
                if self._stopping:
                    return
            for command in ready:
                try:
                    self._decide(command, trusted)
                except Exception as exc:  # the thread must go on
                    self._faults.internal_error(f"judging command {command.id}", exc)
                with self._lock:
                    self._undecided -= 1

    def _due(self) -> tuple[list[Command], bool]:
        """Commands to judge now (all once trusted, else those whose wait is over)."""
        trusted = self._trust is None or self._trust.trusted
        now = self._clock.monotonic()
        ready: list[Command] = []
        while self._waiting and (trusted or self._waiting[0][0] <= now):
            ready.append(self._waiting.popleft()[1])
        return ready, trusted

    # --- verdicts ------------------------------------------------------------------------
    def _decide(self, command: Command, trusted: bool) -> None:
        verdict = self._validator.judge(command, trusted)
        if isinstance(verdict, Rejection):
            self._reject(verdict)
            return
        self._journal.ack(verdict.id, "accepted")
        self._metrics.command(verdict.type, "accepted")
        try:
            self._on_command(verdict)
        except Exception as exc:
            log.exception("executing command %s failed", verdict.id)
            self._journal.ack(verdict.id, "failed", f"internal: {exc}")
            self._metrics.command(verdict.type, "failed")

    def _reject(self, rejection: Rejection) -> None:
        if rejection.command_id is None:
            self._metrics.command_dropped(rejection.code)
            with self._lock:
                self._rejected[rejection.code] += 1
            return
        self._metrics.command(rejection.command_type, "rejected")
        with self._lock:
            self._rejected[rejection.code] += 1
            if len(self._rejections) >= MAX_PENDING_REJECTIONS:
                self._dropped += 1
                self._metrics.command_dropped(rejection.code)
            else:
                self._rejections.append((rejection.command_id, rejection.reason,
                                         self._clock.now()))
        self._journal.notify()  # the outbox thread flushes: a lone rejection is acked at once

    # --- the mqtt-outbox thread ------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered rejection acks (a batch at most every REJECTION_FLUSH_S)."""
        now = self._clock.monotonic()
        with self._lock:
            if now - self._last_flush < REJECTION_FLUSH_S \
                    or not (self._rejected or self._rejections):
                return
            self._last_flush = now
            batch = self._rejections[:REJECTION_ACKS_PER_FLUSH]
            del self._rejections[:REJECTION_ACKS_PER_FLUSH]
            codes, self._rejected = self._rejected, Counter()
            dropped, self._dropped = self._dropped, 0
        self._journal.rejected(batch)
        if not codes:  # the rest of an earlier flood's acks
            return
        if sum(codes.values()) == 1 and len(batch) == 1:
            log.warning("rejected command %s: %s", batch[0][0], batch[0][1])
            return
        log.warning("rejected %d commands (%s)%s", sum(codes.values()),
                    ", ".join(f"{code} ×{n}" for code, n in codes.most_common()),
                    f"; {dropped} not acked (too many)" if dropped else "")
