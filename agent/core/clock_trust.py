"""Whether the wall clock can be trusted since this boot (source-api.md, Schedule).

A controller without a battery-backed RTC boots with the time it saved at shutdown,
behind by however long the power was off. The clock is trusted once, since this boot,
any allowed witness vouched for it:

- ``ntp``: the kernel reports NTP synchronisation (``adjtimex``: no ``STA_UNSYNC``);
- ``rtc``: a hardware RTC set the system time at boot (``/sys/class/rtc/rtc0/hctosys``);
- ``source``: a ``Date`` header of the source system agreed within ``SOURCE_AGREEMENT_S``;
- ``always``: config says to trust the clock as it is (test benches).

Trust lasts until the next boot: the boot id it was granted in is kept in the state
store, so an agent restart keeps it. While untrusted, fault ``clock_unsynced`` is raised.
:func:`decide` is the pure rule; :class:`ClockTrust` gathers the facts, holds the answer
and tells listeners when it changes.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.core.faults import FaultRegistry

log = logging.getLogger(__name__)

WITNESSES = ("ntp", "rtc", "source", "always")
DEFAULT_WITNESSES = ("ntp", "rtc", "source")
SOURCE_AGREEMENT_S = 2.0
KEY_TRUSTED_BOOT = "clock.trusted_boot_id"
_STA_UNSYNC = 0x40
_TIME_ERROR = 5


@dataclass(frozen=True)
class ClockFacts:
    ntp_synced: bool  # the kernel says NTP has synchronised the clock
    rtc_set_clock: bool  # a hardware RTC set the system time at this boot
    source_agreed: bool  # a source Date header agreed within SOURCE_AGREEMENT_S
    trusted_this_boot: bool  # trust was granted earlier in this boot (agent restarted)


def decide(facts: ClockFacts, allowed: Iterable[str]) -> str | None:
    """The witness that vouches for the clock, or None while it is untrusted."""
    allowed = set(allowed)
    if facts.trusted_this_boot:
        return "earlier in this boot"
    for witness, says in (("always", True), ("ntp", facts.ntp_synced),
                          ("rtc", facts.rtc_set_clock), ("source", facts.source_agreed)):
        if witness in allowed and says:
            return witness
    return None


class ClockProbe(Protocol):
    """Where the facts come from; tests inject their own."""

    def ntp_synced(self) -> bool: ...
    def rtc_set_clock(self) -> bool: ...
    def boot_id(self) -> str | None: ...


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("rest", ctypes.c_long * 40)]


class SystemProbe:
    """The kernel's answers (Linux)."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._root = root

    def ntp_synced(self) -> bool:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            timex = _Timex()  # modes 0: read only
            state = libc.adjtimex(ctypes.byref(timex))
        except (OSError, AttributeError):
            return False
        return bool(state != _TIME_ERROR and not timex.status & _STA_UNSYNC)

    def rtc_set_clock(self) -> bool:
        try:
            return (self._root / "sys/class/rtc/rtc0/hctosys").read_text().strip() == "1"
        except OSError:
            return False

    def boot_id(self) -> str | None:
        try:
            return (self._root / "proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return None


class TrustMemory(Protocol):
    """Where the boot id of the trust is kept (the StateStore's key/value table)."""

    def get(self, key: str, default: object = None) -> object: ...
    def put(self, key: str, value: object) -> None: ...


TrustListener = Callable[[bool], None]


class ClockTrust:
    """Thread-safe holder of the answer: :attr:`trusted`, :meth:`subscribe`, :meth:`wait`.

    :meth:`check` is called periodically (the daemon's main loop, once a second) and
    :meth:`source_date` by the source client for every answer of the source.
    """

    def __init__(self, probe: ClockProbe, memory: TrustMemory, faults: FaultRegistry,
                 now: Callable[[], float], allowed: Iterable[str] = DEFAULT_WITNESSES) -> None:
        self._probe = probe
        self._memory = memory
        self._faults = faults
        self._now = now
        self._allowed = tuple(allowed)
        self._boot_id = probe.boot_id()
        self._source_agreed = False
        self._trusted = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[TrustListener] = []

    @property
    def trusted(self) -> bool:
        return self._trusted.is_set()

    def subscribe(self, listener: TrustListener) -> None:
        """``listener(trusted)`` is called (from whichever thread saw the change) when
        trust is granted. It is never withdrawn before the next boot."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: TrustListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def wait(self, timeout: float) -> bool:
        """Block until the clock is trusted or ``timeout`` passes; whether it is."""
        return self._trusted.wait(timeout)

    def check(self) -> bool:
        """Gather the facts and decide; True when trusted."""
        if self._trusted.is_set():
            return True
        remembered = self._boot_id is not None \
            and self._memory.get(KEY_TRUSTED_BOOT) == self._boot_id
        facts = ClockFacts(ntp_synced="ntp" in self._allowed and self._probe.ntp_synced(),
                           rtc_set_clock="rtc" in self._allowed and self._probe.rtc_set_clock(),
                           source_agreed=self._source_agreed, trusted_this_boot=remembered)
        witness = decide(facts, self._allowed)
        if witness is None:
            self._faults.raise_("clock_unsynced", "the clock is not trusted since this boot: "
                                f"no {' or '.join(self._allowed)} has vouched for it")
            return False
        self._grant(witness, remembered)
        return True

    def source_date(self, header: str | None) -> None:
        """A ``Date`` header of the source system, read as its answer arrived."""
        if header is None or self._trusted.is_set() or "source" not in self._allowed:
            return
        from email.utils import parsedate_to_datetime  # 10 ms: not on `validate`'s path

        try:
            theirs = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        offset = self._now() - theirs
        if abs(offset) <= SOURCE_AGREEMENT_S:
            self._source_agreed = True
            self.check()
        else:
            log.debug("clock differs from the source's Date by %.1f s", offset)

    def _grant(self, witness: str, remembered: bool) -> None:
        with self._lock:
            if self._trusted.is_set():
                return
            self._trusted.set()
            listeners = list(self._listeners)
        if not remembered and self._boot_id is not None:
            try:
                self._memory.put(KEY_TRUSTED_BOOT, self._boot_id)
            except Exception as exc:
                log.warning("cannot remember the clock trust across restarts: %s", exc)
        log.info("the clock is trusted (%s)", witness)
        self._faults.clear("clock_unsynced")
        for listener in listeners:
            listener(True)
