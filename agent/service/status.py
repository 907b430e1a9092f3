"""Status (mqtt.md, plus ``next`` for technicians): what a running Daemon reports of itself
over MQTT, on /status and in the systemd status line. Building it also sets the metrics
gauges that follow it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.state.store import StateStore

if TYPE_CHECKING:
    from agent.service.daemon import Daemon


def daemon_status(daemon: Daemon) -> dict[str, Any]:
    """The Status object of mqtt.md (plus ``next`` for technicians)."""
    now = daemon.clock.now()
    snap = daemon.control.snapshot()
    sync = daemon.sync.status()
    cache = daemon.cache.stats()
    playing = snap["playing"]
    daemon.metrics.playing(None if playing is None else playing["source"],
                           None if playing is None else playing["priority"])
    daemon.metrics.volume(snap["volume"])
    daemon.metrics.amplifier(snap["amplifier"] == "on")
    daemon.metrics.cache(cache.items, cache.bytes, cache.missing)
    fm = None
    if daemon.tuner is not None and daemon.tuner.running:
        fm = {"frequency_mhz": daemon.tuner.frequency_mhz,
              "signal_dbfs": daemon.tuner.signal_dbfs}
        daemon.metrics.fm_signal(daemon.tuner.signal_dbfs)
    return {
        "device_id": daemon.cfg.device_id, "online": True, "at": daemon.journal.stamp(now),
        "agent_version": __version__, "update": daemon.update.status(),
        "uptime_s": int(daemon.clock.monotonic() - daemon.started_mono),
        "power": daemon.power.state,
        "line_in": None if daemon.line_in is None else {
            **daemon.line_in.status(),
            "on_air": playing is not None and playing["source"] == "line_in"},
        "recording": daemon.recording.status(),
        "playing": playing, "volume": snap["volume"], "amplifier": snap["amplifier"],
        "mqtt": {"connected": daemon.mqtt is not None and daemon.mqtt.connected},
        "source": {"reachable": sync.reachable,
                   "last_sync_at": None if sync.last_sync_at is None
                   else daemon.journal.stamp(sync.last_sync_at),
                   "schedule_version": sync.schedule_version},
        "cache": {"items": cache.items, "bytes": cache.bytes,
                  "free_bytes": cache.free_bytes, "missing": cache.missing},
        "fm": fm,
        "faults": [{"code": f.code, "message": f.message, "severity": f.severity,
                    "since": daemon.journal.stamp(f.since)} for f in daemon.faults.active()],
        "system": system_facts(daemon.store, daemon.clock_trust.trusted),
        "next": snap["next"],
    }


def system_facts(store: StateStore, clock_trusted: bool) -> dict[str, Any]:
    """Status ``system``: ``disk_free_bytes`` is the free space of the state file system
    (play reports, faults and acks live there), ``clock_synced`` the clock trust."""
    temp = None
    with contextlib.suppress(OSError, ValueError):
        temp = int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    free = None
    with contextlib.suppress(OSError):
        free = store.free_bytes()
    return {"cpu_temp_c": temp, "load1": round(os.getloadavg()[0], 2),
            "disk_free_bytes": free, "clock_synced": clock_trusted}
