"""The validated, immutable configuration: `Config` and its sections, as
agent/config/loader.py builds them from agent.yaml and conf.d (docs/config.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.config.addresses import BrokerUri, HostPort, parse_broker_uri, parse_host_port


@dataclass(frozen=True)
class SourceConfig:
    url: str
    token: str | None
    poll_interval_s: float
    max_backoff_s: float
    verify_tls: bool
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    public_key: bytes | None  # raw 32-byte Ed25519 key; when set, schedules must be signed
    read_timeout_s: float
    max_schedule_bytes: int  # counted after content decoding
    request_deadline_s: float  # overall, for a schedule or reports exchange
    media_deadline_s: float  # overall, for one media request (downloads resume)


@dataclass(frozen=True)
class CacheConfig:
    dir: Path
    max_bytes: int
    min_free_bytes: int  # downloads never take the file system below this


@dataclass(frozen=True)
class MqttConfig:
    brokers: tuple[str, ...]  # empty: MQTT is off
    username: str | None
    password: str | None
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    topic_prefix: str
    heartbeat_s: float
    keepalive_s: float
    command_public_key: bytes | None  # raw 32-byte Ed25519 key; when set, commands must be signed
    max_command_age_s: float
    max_clock_skew_s: float  # issued_at further in the future: rejected clock_skew
    clock_wait_s: float  # how long a command waits for a trusted clock
    outbox_max: int
    max_payload_bytes: int
    protocol: Literal["3.1.1", "5"]

    @property
    def broker_uris(self) -> tuple[BrokerUri, ...]:
        return tuple(parse_broker_uri(uri) for uri in self.brokers)


@dataclass(frozen=True)
class HealthConfig:
    listen: str
    token: str | None
    max_connections: int
    request_timeout_s: float

    @property
    def host(self) -> str:
        return parse_host_port(self.listen).host

    @property
    def port(self) -> int:
        return parse_host_port(self.listen).port


@dataclass(frozen=True)
class MixerConfig:
    card: int
    control: str


@dataclass(frozen=True)
class AudioConfig:
    output: str  # alsa:<pcm> or wav:<absolute path>
    rate: int
    mixer: MixerConfig | None  # None: software gain
    default_volume: int
    emergency_volume: int
    chime: Path | None  # None: the built-in chime
    dead_air_s: float
    dead_air_dbfs: float
    decoder_hang_s: float
    stream_caching_ms: int

    @property
    def output_kind(self) -> str:
        return self.output.partition(":")[0]

    @property
    def output_arg(self) -> str:
        return self.output.partition(":")[2]


@dataclass(frozen=True)
class GpioConfig:
    chip: str
    line: int
    active_high: bool


@dataclass(frozen=True)
class AmplifierConfig:
    backend: str  # gpio | sim | none
    gpio: GpioConfig
    warmup_s: float
    idle_off_s: float


@dataclass(frozen=True)
class FmConfig:
    backend: str  # rtl_fm | rtl_tcp | none
    rtl_tcp: str
    gain_db: float | None  # None: the tuner's automatic gain ("auto")
    ppm: int
    squelch_dbfs: float
    sample_rate: int

    @property
    def rtl_tcp_address(self) -> HostPort:
        return parse_host_port(self.rtl_tcp)


@dataclass(frozen=True)
class ClockConfig:
    trusted_by: tuple[str, ...]  # ntp, rtc, source, always (agent.core.clock_trust)
    backend: str  # system | sim (agent.core.clock.SimClock)


@dataclass(frozen=True)
class TtsConfig:
    engine: str
    voice: str


@dataclass(frozen=True)
class LineInConfig:
    input: str | None  # alsa:<pcm> or wav:<absolute path>; None: no line input
    vox: bool
    threshold_dbfs: float
    on_after_s: float
    off_after_s: float
    priority: Literal["priority", "live", "emergency"]
    chime: bool  # VOX: the chime before the input goes on air


@dataclass(frozen=True)
class RecordingConfig:
    enabled: bool
    dir: Path
    max_bytes: int
    max_days: float
    segment_s: float


@dataclass(frozen=True)
class PowerConfig:
    backend: str  # gpio | sim | none: the mains-present input (hil.md)
    gpio: GpioConfig  # active_high: the line is high while mains is present


@dataclass(frozen=True)
class UpdateConfig:
    commit_after_s: float  # a new version must stay healthy this long to be kept
    window: str  # HH:MM-HH:MM local time: when a staged update may switch
    max_bytes: int  # the largest bundle accepted


@dataclass(frozen=True)
class Config:
    device_id: str
    groups: tuple[str, ...]
    timezone: str
    state_dir: Path
    late_start_grace_s: float
    log_level: str
    source: SourceConfig
    cache: CacheConfig
    mqtt: MqttConfig
    health: HealthConfig
    audio: AudioConfig
    amplifier: AmplifierConfig
    fm: FmConfig
    clock: ClockConfig
    tts: TtsConfig
    line_in: LineInConfig
    recording: RecordingConfig
    power: PowerConfig
    update: UpdateConfig
    warnings: tuple[str, ...]  # `PATH:LINE: KEY: message`, for the caller to log
    files: tuple[Path, ...]  # the main file, then each conf.d file merged
