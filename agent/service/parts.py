"""Builders the daemon wires together: the control loop's settings, the FM tuner, the line
input, the MQTT link's settings and command path."""

from __future__ import annotations

from collections.abc import Callable

from agent.config.model import Config
from agent.control.state import ControlSettings
from agent.control.vox import Vox
from agent.core.clock import Clock
from agent.core.clock_trust import ClockTrust
from agent.core.faults import FaultRegistry
from agent.core.signing import public_key_from_raw
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command, CommandLimits, CommandValidator
from agent.mqtt.intake import CommandIntake
from agent.mqtt.link import MqttSettings
from agent.playout.fm_tuner import FmTuner
from agent.playout.line_in import LineInput
from agent.state.journal import Journal
from agent.state.store import StateStore
from drivers.capture import LineCapture, open_capture
from drivers.sdr import receiver_factory


def control_settings(cfg: Config) -> ControlSettings:
    return ControlSettings(
        rate=cfg.audio.rate, late_start_grace_s=cfg.late_start_grace_s,
        default_volume=cfg.audio.default_volume, emergency_volume=cfg.audio.emergency_volume,
        warmup_s=cfg.amplifier.warmup_s, idle_off_s=cfg.amplifier.idle_off_s,
        decoder_hang_s=cfg.audio.decoder_hang_s, stream_caching_ms=cfg.audio.stream_caching_ms,
        dead_air_s=cfg.audio.dead_air_s, dead_air_dbfs=cfg.audio.dead_air_dbfs,
        vox_priority=cfg.line_in.priority, vox_chime=cfg.line_in.chime)


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
                 on_vox: Callable[[bool], None],
                 on_captured: Callable[[], None]) -> LineInput | None:
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
                     on_vox=on_vox, on_captured=on_captured)


def mqtt_settings(cfg: Config) -> MqttSettings:
    m = cfg.mqtt
    return MqttSettings(
        brokers=tuple(m.brokers), username=m.username, password=m.password,
        ca_file=m.ca_file, client_cert=m.client_cert, client_key=m.client_key,
        topic_prefix=m.topic_prefix, heartbeat_s=m.heartbeat_s, keepalive_s=m.keepalive_s,
        protocol=m.protocol)


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
