"""The agent's Prometheus metrics (health-http.md, ``GET /metrics``) on a private registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from agent import __version__
from agent.core.clock import Clock
from agent.core.faults import FAULT_SEVERITY, Fault
from agent.core.schedule import PRIORITY_RANK

# generate_latest writes the classic text format (underscore names); newer prometheus_client
# releases label it 1.0.0 in CONTENT_TYPE_LATEST, which older Prometheus servers reject.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SOURCES = ("media", "stream", "fm", "tts", "line_in")
PRIORITIES = tuple(PRIORITY_RANK)
_PREFIX = "broadcast_agent_"
TICK_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5)

# A `_created` sample per counter (and per label set) doubles the exposition for nothing a
# scraper of this agent uses; the switch is process-wide in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream


class AgentMetrics:
    def __init__(self, clock: Clock) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        started = clock.monotonic()

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(_PREFIX + name, doc, labels, registry=self.registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(_PREFIX + name, doc, labels, registry=self.registry)

        # process_resident_memory_bytes, process_cpu_seconds_total, open fds... of this process.
        ProcessCollector(registry=self.registry)
        gauge("build_info", "Always 1; the agent's version as a label",
              ("version",)).labels(__version__).set(1)
        gauge("uptime_seconds", "Seconds since the agent started").set_function(
            lambda: clock.monotonic() - started)
        self._playing = gauge("playing", "1 for the source and priority playing now",
                              ("source", "priority"))
        for source in SOURCES:
            for priority in PRIORITIES:
                self._playing.labels(source, priority).set(0)
        self._volume = gauge("volume_percent", "Master volume, 0-100")
        self._amplifier = gauge("amplifier_on", "1 while the amplifier is powered")
        self._cache_items = gauge("cache_items", "Media files in the cache")
        self._cache_bytes = gauge("cache_bytes", "Bytes of media in the cache")
        self._cache_missing = gauge("cache_missing", "Scheduled media not cached yet")
        self._schedule_version = gauge("schedule_version", "Version of the applied schedule")
        self._last_sync = gauge("last_sync_timestamp_seconds",
                                "Unix time of the last successful schedule sync")
        self._downloads = counter("downloads", "Media downloads by outcome", ("outcome",))
        self._download_bytes = counter("download_bytes", "Media bytes downloaded")
        self._mqtt_connected = gauge("mqtt_connected", "1 while connected to an MQTT broker")
        self._outbox_depth = gauge("outbox_depth", "Records waiting in the outbox",
                                   ("channel",))
        self._faults_raised = counter("faults_raised", "Faults raised, by code", ("code",))
        self._fault_active = gauge("fault_active", "1 while the fault is raised",
                                   ("code", "severity"))
        for code, severity in FAULT_SEVERITY.items():
            self._fault_active.labels(code, severity).set(0)
        self._commands = counter("commands", "MQTT commands by type and ack status",
                                 ("type", "status"))
        self._dropped = counter("command_payloads_dropped",
                                "MQTT command payloads too broken to acknowledge", ("reason",))
        self._fm_signal = gauge("fm_signal_dbfs", "FM signal level (NaN when not relaying)")
        self._fm_signal.set(float("nan"))
        self._recording_dropped = counter(
            "recording_dropped_periods",
            "Periods the recorder had no room for: played, but recorded as silence")
        self._recording_bytes = gauge("recording_bytes", "Bytes in the off-air recording store")
        self._playout_buffered = gauge(
            "playout_buffered_seconds",
            "PCM of the voice on air waiting in its pipe to the playout process, ahead of "
            "the card (NaN when nothing plays): the margin a stall of the agent eats into")
        self._control_tick = Histogram(
            _PREFIX + "control_tick_seconds",
            "How long one turn of the deciding thread took (facts applied, then the tick); "
            "it never waits for a process, a file or a receiver", registry=self.registry,
            buckets=TICK_BUCKETS_S)
        self._card_underrun = gauge(
            "card_underrun_seconds",
            "Silence the sound card played because the playout was late, since the agent "
            "started (only grows): each increase was a gap on air")

    def control_tick(self, seconds: float) -> None:
        self._control_tick.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def playing(self, source: str | None, priority: str | None) -> None:
        """What plays now; None, None when idle."""
        for s in SOURCES:
            for p in PRIORITIES:
                self._playing.labels(s, p).set(1 if (s, p) == (source, priority) else 0)

    def volume(self, percent: int) -> None:
        self._volume.set(percent)

    def amplifier(self, on: bool) -> None:
        self._amplifier.set(1 if on else 0)

    def cache(self, items: int, size_bytes: int, missing: int) -> None:
        self._cache_items.set(items)
        self._cache_bytes.set(size_bytes)
        self._cache_missing.set(missing)

    def schedule_applied(self, version: int) -> None:
        self._schedule_version.set(version)

    def synced(self, at: float) -> None:
        self._last_sync.set(at)

    def download(self, outcome: str, size_bytes: int) -> None:
        self._downloads.labels(outcome).inc()
        self._download_bytes.inc(size_bytes)

    def mqtt_connected(self, connected: bool) -> None:
        self._mqtt_connected.set(1 if connected else 0)

    def watch_outbox(self, channel: str, depth: Callable[[], int]) -> None:
        """Read the outbox depth of ``channel`` at every scrape."""
        self._outbox_depth.labels(channel).set_function(lambda: float(depth()))

    def on_fault(self, change: str, fault: Fault, cleared_at: float | None) -> None:
        """A FaultRegistry listener."""
        raised = change == "raised"
        if raised:
            self._faults_raised.labels(fault.code).inc()
        self._fault_active.labels(fault.code, fault.severity).set(1 if raised else 0)

    def command(self, command_type: str | None, status: str) -> None:
        self._commands.labels(command_type or "unknown", status).inc()

    def command_dropped(self, reason: str) -> None:
        self._dropped.labels(reason).inc()

    def recording_dropped(self, periods: int) -> None:
        self._recording_dropped.inc(periods)

    def watch_recording(self, size: Callable[[], int]) -> None:
        """Read the recording store's size at every scrape."""
        self._recording_bytes.set_function(lambda: float(size()))

    def watch_card(self, underrun_s: Callable[[], float],
                   buffered_s: Callable[[], float | None]) -> None:
        """Read the card's underruns and the PCM buffered ahead of it at every scrape."""
        self._card_underrun.set_function(underrun_s)

        def buffered() -> float:
            seconds = buffered_s()
            return float("nan") if seconds is None else seconds
        self._playout_buffered.set_function(buffered)

    def fm_signal(self, dbfs: float | None) -> None:
        self._fm_signal.set(float("nan") if dbfs is None else dbfs)
