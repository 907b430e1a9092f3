"""The machine's checks: the clock is synchronised, there is disk space, the state and cache
directories are writable, the service runs."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent.cli.doctor.results import CheckResult, failed, msg, passed, warned
from agent.config.model import Config

SERVICE = "broadcast-agent"
DISK_FAIL_BYTES = 20_000_000
DISK_WARN_BYTES = 200_000_000


class _Timex(ctypes.Structure):
    """struct timex of adjtimex(2); only `status` and `maxerror` are read."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long),
                ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("reserved", ctypes.c_int * 11)]


STA_UNSYNC = 0x0040
MAX_SYNCED_ERROR_US = 16_000_000  # the kernel's "unsynchronised" mark, as timedated reads it


def clock_synchronised() -> bool:
    """What `timedatectl show -p NTPSynchronized` reports, read from the kernel directly
    (adjtimex with modes 0 only reads), so it works without systemd and D-Bus."""
    timex = _Timex()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.adjtimex(ctypes.byref(timex)) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return not timex.status & STA_UNSYNC and timex.maxerror < MAX_SYNCED_ERROR_US


def check_clock() -> list[CheckResult]:
    if clock_synchronised():
        return [passed("clock", msg("synchronised (NTP)"))]
    return [failed("clock", msg("not synchronised: programmes would air at the wrong time and "
                                "TLS may fail"),
                   msg("Check chrony: `chronyc tracking`, `chronyc sources`, "
                       "`systemctl status chrony`; it needs UDP port 123 or an NTP server on "
                       "the network."))]


def check_disk(cfg: Config) -> list[CheckResult]:
    results = []
    for path in dict.fromkeys((cfg.state_dir, cfg.cache.dir)):
        existing = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        detail = msg("{free} MB free for {path}", free=free // 1_000_000, path=path)
        hint = msg("Free some space: `sudo journalctl --vacuum-size=20M`, remove old files; "
                   "lower cache.max_bytes if the card is small.")
        if free < DISK_FAIL_BYTES:
            results.append(failed("disk", detail, hint))
        elif free < DISK_WARN_BYTES:
            results.append(warned("disk", detail, hint))
        else:
            results.append(passed("disk", detail))
    return results


def check_writable(check: str, path: Path) -> list[CheckResult]:
    hint = msg("systemd creates it when the service starts (StateDirectory=/CacheDirectory=); "
               "otherwise `sudo install -d -o broadcast-agent -g broadcast-agent -m 0750 "
               "{path}`.", path=path)
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as error:
        return [failed(check, msg("{path} is not writable: {error}", path=path,
                                  error=error.strerror), hint)]
    return [passed(check, msg("{path} is writable", path=path))]


def check_service() -> list[CheckResult]:
    if not Path("/run/systemd/system").is_dir():
        return [warned("service", msg("this machine does not run systemd as init: the service "
                                      "state cannot be checked"),
                       msg("On a controller, `systemctl status broadcast-agent` shows it."))]
    state = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True,
                           text=True, timeout=10).stdout.strip()
    if state == "active":
        return [passed("service", msg("broadcast-agent is active"))]
    return [failed("service", msg("broadcast-agent is {state}", state=state or "unknown"),
                   msg("See why: `journalctl -u broadcast-agent -n 50`; start it with "
                       "`sudo systemctl start broadcast-agent`."))]
