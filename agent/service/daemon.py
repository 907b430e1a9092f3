"""The daemon: builds every component from a Config, owns their threads, and runs the
main loop (signals, reload, systemd readiness and watchdog)."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

from agent import __version__
from agent.config.loader import ConfigError, load_config
from agent.config.model import Config
from agent.control.loop import ControlLoop
from agent.control.state import CommandReceived, Reconfigured, ScheduleApplied, VoxChanged
from agent.core.clock import Clock, open_clock
from agent.core.clock_trust import ClockTrust, SystemProbe
from agent.core.faults import FaultRegistry
from agent.core.schedule import Schedule
from agent.http.health import HealthServer
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command
from agent.mqtt.link import MqttLink
from agent.playout.decoder import DecoderPool
from agent.playout.remote import PlayoutProcess
from agent.playout.sources import builtin_chime
from agent.playout.tts import TtsRenderer
from agent.recording.service import OffAirRecording
from agent.service import sdnotify
from agent.service.parts import (
    command_intake,
    control_settings,
    mqtt_settings,
    open_line_in,
    open_tuner,
)
from agent.service.power import PowerMonitor
from agent.service.reconfigure import config_changes, file_stamps, live_and_pending
from agent.service.status import daemon_status
from agent.source.cache import MediaCache
from agent.source.client import SourceClient, SourceSettings
from agent.source.reports import ReportUploader
from agent.source.sync import SyncService
from agent.state.journal import REPORT, Journal
from agent.state.plays import PlayJournal
from agent.state.store import STATE_DB, StateStore
from agent.update.service import UpdateService
from agent.update.state import update_root
from drivers.amplifier import open_amplifier
from drivers.mixer import open_mixer
from drivers.power import open_mains_sensor

log = logging.getLogger("agent")

WATCHDOG_STALE_S = 5.0  # the control loop must have ticked this recently to feed systemd
STATUS_MIN_INTERVAL_S = 1.0


class Daemon:
    def __init__(self, cfg: Config, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or open_clock(cfg.clock.backend, cfg.state_dir)
        self.started_mono = self.clock.monotonic()
        self.tz = ZoneInfo(cfg.timezone)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(cfg.state_dir / STATE_DB, outbox_max=cfg.mqtt.outbox_max)
        self.faults = FaultRegistry(self.clock.now)
        self.journal = Journal(self.store, self.clock, self.tz,
                               mqtt_enabled=bool(cfg.mqtt.brokers))
        self.metrics = AgentMetrics(self.clock)
        self.journal.on_write_failure = self._state_write_failure
        self.faults.subscribe(self.journal.on_fault)
        self.faults.subscribe(self.metrics.on_fault)
        self.faults.subscribe(lambda *_: self.status_changed())
        self.metrics.watch_outbox(REPORT, lambda: self.store.depth(REPORT))
        self.cache = MediaCache(self.store, cfg.cache.dir, cfg.cache.max_bytes, self.clock,
                                self.faults, min_free_bytes=cfg.cache.min_free_bytes)
        # Trusted since this boot? (agent.core.clock_trust) The control loop reads
        # clock_trust.trusted; commands wait for it in agent.mqtt.intake.
        self.clock_trust = ClockTrust(SystemProbe(), self.store, self.faults, self.clock.now,
                                      cfg.clock.trusted_by)
        self.source = SourceClient(SourceSettings.from_config(cfg),
                                   on_date=self.clock_trust.source_date)
        self.sync = SyncService(
            self.source, self.cache, self.store, self.journal, self.faults, self.clock,
            device_id=cfg.device_id, default_tz=cfg.timezone,
            poll_interval_s=cfg.source.poll_interval_s, max_backoff_s=cfg.source.max_backoff_s,
            on_applied=self._schedule_applied, on_download=self.metrics.download)
        self.reports = ReportUploader(self.store, self.journal, self.source, self.faults,
                                      max_backoff_s=cfg.source.max_backoff_s)
        self.decoders = DecoderPool(cfg.audio.rate, self.clock.monotonic)
        self.recording = OffAirRecording(
            cfg, faults=self.faults, clock=self.clock, journal=self.journal,
            metrics=self.metrics, source=self.source)
        self.engine = PlayoutProcess(
            cfg.audio.output, cfg.audio.rate, self.clock,
            on_event=lambda event: self.control.on_engine_event(event),
            on_down=lambda reason: self.faults.raise_("playout_failed", reason),
            on_up=lambda: self.faults.clear("playout_failed"),
            record_fd=self.recording.record_fd)
        self.metrics.watch_card(lambda: self.engine.card_underrun_frames / cfg.audio.rate,
                                self.engine.buffered_s)
        mixer_cfg = None if cfg.audio.mixer is None else {
            "card": cfg.audio.mixer.card, "control": cfg.audio.mixer.control}
        self.amplifier = open_amplifier(
            cfg.amplifier.backend, state_dir=cfg.state_dir, chip=cfg.amplifier.gpio.chip,
            line=cfg.amplifier.gpio.line, active_high=cfg.amplifier.gpio.active_high)
        self.tuner = open_tuner(cfg, self.faults, self.clock)
        self.line_in = open_line_in(cfg, self.faults, self.clock,
                                    lambda on: self.control.post(VoxChanged(on)),
                                    self.engine.wake_feeder)
        self.power = PowerMonitor(
            open_mains_sensor(cfg.power.backend, state_dir=cfg.state_dir,
                              chip=cfg.power.gpio.chip, line=cfg.power.gpio.line,
                              active_high=cfg.power.gpio.active_high),
            self.faults, self.status_changed)
        self.control = ControlLoop(
            settings=control_settings(cfg), clock=self.clock, engine=self.engine,
            decoders=self.decoders, media=self.cache,
            tts=TtsRenderer(cfg.cache.dir / "tts", cfg.tts.voice, cfg.tts.engine),
            tuner=self.tuner, line_in=self.line_in, amplifier=self.amplifier,
            mixer=open_mixer(mixer_cfg),
            chime_pcm=self._chime(), journal=self.journal,
            plays=PlayJournal(self.store), faults=self.faults,
            store=self.store, on_change=self.status_changed, sync_now=self.sync.sync_now,
            count_command=self.metrics.command,
            clock_trusted=lambda: self.clock_trust.trusted,
            observe_tick=self.metrics.control_tick)
        self.mqtt = self._mqtt_link() if cfg.mqtt.brokers else None
        self.health = HealthServer(cfg.health.host, cfg.health.port, cfg.health.token,
                                   cfg.health.max_connections, cfg.health.request_timeout_s,
                                   self.status, self.faults, self.metrics,
                                   refresh_metrics=self._refresh_metrics,
                                   recordings=self.recording.span)
        self._stop = threading.Event()
        u = cfg.update
        self.update = UpdateService(
            update_root(cfg.state_dir), __version__, commit_after_s=u.commit_after_s,
            window=u.window, max_bytes=u.max_bytes, journal=self.journal, faults=self.faults,
            clock=self.clock, tz=self.tz, snapshot=self.control.snapshot,
            problems=self._trial_problems, restart=self._stop.set,
            on_change=self.status_changed, count_command=self.metrics.command)
        self._reload = threading.Event()
        self._status_dirty = threading.Event()
        self._status_dirty.set()
        self._config_path = cfg.files[0] if cfg.files else None
        self._config_stamp = file_stamps(self._config_path, self.cfg.files)

    # --- wiring helpers ----------------------------------------------------------------
    def _chime(self) -> bytes:
        if self.cfg.audio.chime is None:
            return builtin_chime(self.cfg.audio.rate)
        stream = self.decoders.open(str(self.cfg.audio.chime))
        deadline = time.monotonic() + 10
        pcm = bytearray()
        while not stream.finished and time.monotonic() < deadline:
            pcm += stream.read(1 << 20)
            time.sleep(0.02)
        stream.close()
        if not pcm:
            log.error("chime %s could not be decoded; using the built-in chime",
                      self.cfg.audio.chime)
            return builtin_chime(self.cfg.audio.rate)
        return bytes(pcm)

    def _mqtt_link(self) -> MqttLink:
        intake = command_intake(self.cfg, self.store, self.journal, self.metrics, self.faults,
                                self.clock, self.clock_trust, self._media_known,
                                self._command)
        return MqttLink(mqtt_settings(self.cfg), self.cfg.device_id, tuple(self.cfg.groups),
                        self.store, self.journal, self.clock, self.status, intake, self.faults,
                        self.metrics)

    def _media_known(self, media_id: str) -> bool:
        schedule = self.sync.applied
        entry = schedule.media.get(media_id) if schedule is not None else None
        return entry is not None and self.cache.path(entry.sha256) is not None

    def _command(self, command: Command) -> None:
        if command.type == "upload_recording":  # file work and HTTP: off the control thread
            self.recording.upload(command)
            return
        if command.type == "update":
            self.update.submit(command)
            return
        self.control.post(CommandReceived(command))

    def _schedule_applied(self, schedule: Schedule) -> None:
        self.metrics.schedule_applied(schedule.version)
        self.control.post(ScheduleApplied(schedule))
        self.status_changed()

    # --- status ------------------------------------------------------------------------
    def status_changed(self) -> None:
        self._status_dirty.set()
        if self.mqtt is not None:
            self.mqtt.status_changed()

    def _refresh_metrics(self) -> None:
        """The gauges that follow Status (building it sets them) and the last sync."""
        self.status()
        last_sync = self.sync.status().last_sync_at
        if last_sync is not None:
            self.metrics.synced(last_sync)

    def status(self) -> dict[str, Any]:
        return daemon_status(self)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for warning in self.cfg.warnings:
            log.warning("%s", warning)
        self.clock_trust.check()
        self.recording.start()
        self.engine.start()
        if self.line_in is not None:
            self.line_in.start()
        self.decoders.warm_up()
        applied = self.sync.load_applied()
        if applied is not None:
            self.control.post(ScheduleApplied(applied))
        self.store.sync_batches_behind()
        self.control.start()
        self.power.start()
        self.health.start()
        self.reports.start()
        self.sync.start()
        if self.mqtt is not None:
            self.mqtt.start()
        self.update.start()
        # Everything imported and built so far lives for the whole run: frozen, the garbage
        # collector never walks it again, so a collection cannot stall the playout thread
        # (a full pass over it holds the GIL for ~25 ms here, several times that on a Pi).
        gc.collect()
        gc.freeze()
        # The playout thread must get the GIL back quickly from whoever holds it.
        sys.setswitchinterval(0.002)
        log.info("broadcast-agent %s started as %s", __version__, self.cfg.device_id)

    def stop(self) -> None:
        log.info("stopping")
        sdnotify.notify("STOPPING=1")
        self.update.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.sync.stop()
        self.control.stop()
        if self.line_in is not None:
            self.line_in.stop()
        self.engine.stop()
        self.recording.stop_recorder()
        self.decoders.close()
        self.power.stop()
        if self.tuner is not None:
            self.tuner.stop()
        self.amplifier.set_power(False)
        self.amplifier.close()
        self.reports.stop()
        self.recording.stop_uploads()
        self.health.stop()
        self.store.close()

    # --- live reconfiguration ----------------------------------------------------------
    def reload(self) -> None:
        """Validate the config files again and apply what can change while running.
        An invalid config keeps the running one and raises ``config_invalid``."""
        assert self._config_path is not None
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload refused: %s", line)
            self.faults.raise_("config_invalid", "; ".join(exc.errors[:3]) + (
                f" (+{len(exc.errors) - 3} more)" if len(exc.errors) > 3 else ""))
            return
        self.faults.clear("config_invalid")
        changed = config_changes(self.cfg, new)
        if not changed:
            return
        live, pending = live_and_pending(changed)
        self.cfg = new
        logging.getLogger().setLevel(new.log_level)
        self.sync.poll_interval_s = new.source.poll_interval_s
        self.sync.max_backoff_s = new.source.max_backoff_s
        self.reports.max_backoff_s = new.source.max_backoff_s
        self.recording.uploads.max_backoff_s = new.source.max_backoff_s
        self.control.post(Reconfigured(control_settings(new)))
        if "mqtt" in changed:
            self.journal.mqtt_enabled = bool(new.mqtt.brokers)
            if self.mqtt is not None:
                self.mqtt.stop()
            self.mqtt = self._mqtt_link() if new.mqtt.brokers else None
            if self.mqtt is not None:
                self.mqtt.start()
        if pending:
            log.warning("config changes that take effect at the next restart: %s",
                        ", ".join(pending))
        log.info("config reloaded: %s", ", ".join(live) or "nothing live")
        self.journal.event("config_reloaded", applied=live, pending_restart=pending)
        self.status_changed()

    def _state_write_failure(self, held: int, error: Exception | None) -> None:
        if error is None:
            self.faults.clear("state_write_failed")
        else:
            self.faults.raise_("state_write_failed", f"{held} records held in memory: the "
                               f"state store cannot write ({error})")

    def _keep_state_writable(self) -> None:
        try:
            self.store.maintain()
        except OSError as exc:
            log.warning("state reserve check failed: %s", exc)
        if self.journal.held:
            self.journal.retry()
        if self.store.reserve_released:
            self.faults.raise_("state_disk_full", "the state file system is nearly full: "
                               "its reserve is in use")
        else:
            self.faults.clear("state_disk_full")

    def _trial_problems(self) -> list[str]:
        """What keeps a version on trial from being committed (docs/updates.md)."""
        checks = {"control or playout not ticking": self.healthy(),
                  "no schedule loaded": self.sync.applied is not None,
                  "MQTT not connected": self.mqtt is None or self.mqtt.connected}
        return [problem for problem, fine in checks.items() if not fine]

    def healthy(self) -> bool:
        """True while the control loop and the playout thread are really running."""
        fresh = self.clock.monotonic() - self.control.last_tick_mono < WATCHDOG_STALE_S
        return fresh and self.control.alive and self.engine.alive

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.start()
        sdnotify.notify("READY=1")
        interval = sdnotify.watchdog_interval()
        # A turn at least every STATUS_MIN_INTERVAL_S: STATUS= goes out at most that often.
        tick = STATUS_MIN_INTERVAL_S if interval is None else min(
            max(interval / 3, 0.2), STATUS_MIN_INTERVAL_S)
        status_line = sdnotify.StatusLine()
        while not self._stop.wait(tick):
            self.clock_trust.check()
            self._keep_state_writable()
            stamp = file_stamps(self._config_path, self.cfg.files)
            if self._reload.is_set() or stamp != self._config_stamp:
                self._reload.clear()
                self._config_stamp = stamp
                with sdnotify.reloading():
                    self.reload()
            if self._status_dirty.is_set():
                self._status_dirty.clear()
                status_line.show(self.status())
            if self.healthy():
                sdnotify.notify("WATCHDOG=1")
            else:
                log.error("control loop or playout is not ticking; withholding the watchdog")
        self.stop()
        return 0
