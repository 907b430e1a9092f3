"""Builders the daemon wires together: the FM tuner, the line input, the MQTT command
path, the system facts of Status."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.model import Config
from agent.control.vox import Vox
from agent.core.clock import Clock
from agent.core.clock_trust import ClockTrust
from agent.core.faults import FaultRegistry
from agent.core.signing import public_key_from_raw
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command, CommandLimits, CommandValidator
from agent.mqtt.intake import CommandIntake
from agent.playout.fm_tuner import FmTuner
from agent.playout.line_in import LineInput
from agent.state.journal import Journal
from agent.state.store import StateStore
from drivers.capture import LineCapture, open_capture
from drivers.sdr import receiver_factory


def open_tuner(cfg: Config, faults: FaultRegistry, clock: Clock) -> FmTuner | None:
    # Without a receiver the control loop has no tuner and fails an FM item at once
    # (sdr_missing); a tuner over NoReceiver would relay silence until its item ended.
    if cfg.fm.backend == "none":
        return None

    factory = receiver_factory(cfg.fm.backend, rtl_tcp_address=cfg.fm.rtl_tcp,
                               sample_rate=cfg.fm.sample_rate, gain_db=cfg.fm.gain_db,
                               ppm=cfg.fm.ppm)
    # Only a dongle the agent drives itself may be reset; under rtl_tcp the server owns it.
    usb_reset = None
    if cfg.fm.backend == "rtl_fm":
        from drivers.sdr.rtl_fm import reset_rtl_usb
        usb_reset = reset_rtl_usb
    return FmTuner(factory, faults, clock, squelch_dbfs=cfg.fm.squelch_dbfs,
                   usb_reset=usb_reset)


def open_line_in(cfg: Config, faults: FaultRegistry, clock: Clock,
                 on_vox: Callable[[bool], None]) -> LineInput | None:
    """The line input, or None without one (Status ``line_in`` null; a line_in item then
    fails at once)."""
    spec = cfg.line_in.input
    if spec is None:
        return None

    def factory() -> LineCapture:
        return open_capture(spec, cfg.audio.rate)

    li = cfg.line_in
    vox = Vox(li.threshold_dbfs, li.on_after_s, li.off_after_s) if li.vox else None
    return LineInput(factory, faults, clock, dead_air_dbfs=cfg.audio.dead_air_dbfs, vox=vox,
                     on_vox=on_vox)


def command_intake(cfg: Config, store: StateStore, journal: Journal, metrics: AgentMetrics,
                   faults: FaultRegistry, clock: Clock, trust: ClockTrust,
                   media_known: Callable[[str], bool],
                   on_command: Callable[[Command], None]) -> CommandIntake:
    m = cfg.mqtt
    key = None if m.command_public_key is None \
        else public_key_from_raw(m.command_public_key)
    validator = CommandValidator(
        key, CommandLimits(m.max_command_age_s, m.max_clock_skew_s, m.max_payload_bytes),
        store, clock, media_known, device_id=cfg.device_id, groups=tuple(cfg.groups))
    return CommandIntake(validator, journal, metrics, faults, clock, on_command, trust,
                         m.clock_wait_s)


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
