"""The keys of agent.yaml (docs/config.md): each with its check and default.

The building blocks and the walker that checks a document against the schema are in
agent/config/validation.py, the checks of the values in agent/config/checks.py.
"""

from __future__ import annotations

from pathlib import Path

from agent.config.checks import (
    audio_output,
    boolean,
    broker_uri,
    chime,
    clock_witnesses,
    gain_db,
    host_port,
    http_url,
    integer,
    line_input,
    maintenance_window,
    name_segment,
    number,
    one_of,
    optional,
    path_in,
    public_key,
    sdr_sample_rate,
    text,
    timezone,
    topic_prefix,
)
from agent.config.validation import Key, ListKey, Section
from agent.core.clock_trust import DEFAULT_WITNESSES


def gpio_line(line: int) -> Section:
    """`{chip, line, active_high}` of a GPIO line (the amplifier's relay, the mains sense)."""
    return Section({
        "chip": Key(text, "gpiochip0"),
        "line": Key(integer(minimum=0), line),
        "active_high": Key(boolean, True),
    })


def schema(base: Path) -> Section:
    """Every key of agent.yaml with its check and default; paths are taken from `base`."""
    seconds = number(minimum=0)
    interval = number(minimum=5)
    volume = integer(0, 100)
    secret = Key(optional(text), None)
    secret_file = Key(optional(path_in(base)), None)
    tls_file = Key(optional(path_in(base, must_exist=True)), None)
    dbfs = number(maximum=0)
    return Section({
        "device_id": Key(name_segment),
        "groups": ListKey(name_segment),
        "timezone": Key(timezone, "Asia/Ho_Chi_Minh"),
        "state_dir": Key(path_in(base), Path("/var/lib/broadcast-agent")),
        "late_start_grace_s": Key(seconds, 120.0),
        "log_level": Key(one_of("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        "source": Section({
            "url": Key(http_url),
            "token": secret,
            "token_file": secret_file,
            "poll_interval_s": Key(interval, 60.0),
            "max_backoff_s": Key(number(minimum=1), 600.0),
            "verify_tls": Key(boolean, True),
            "ca_file": tls_file,
            "client_cert": tls_file,
            "client_key": tls_file,
            "public_key": Key(optional(public_key), None),
            "read_timeout_s": Key(number(minimum=1), 30.0),
            "max_schedule_bytes": Key(integer(minimum=1024), 4_194_304),
            "request_deadline_s": Key(number(minimum=1), 120.0),
            "media_deadline_s": Key(number(minimum=1), 600.0),
        }),
        "cache": Section({
            "dir": Key(path_in(base), Path("/var/cache/broadcast-agent")),
            "max_bytes": Key(integer(minimum=1), 2_000_000_000),
            "min_free_bytes": Key(integer(minimum=0), 33_554_432),
        }),
        "mqtt": Section({
            "brokers": ListKey(broker_uri),
            "username": Key(optional(text), None),
            "password": secret,
            "password_file": secret_file,
            "ca_file": tls_file,
            "client_cert": tls_file,
            "client_key": tls_file,
            "topic_prefix": Key(topic_prefix, "tt"),
            "heartbeat_s": Key(interval, 60.0),
            "keepalive_s": Key(interval, 30.0),
            "command_public_key": Key(optional(public_key), None),
            "max_command_age_s": Key(seconds, 300.0),
            "max_clock_skew_s": Key(seconds, 120.0),
            "clock_wait_s": Key(seconds, 60.0),
            "outbox_max": Key(integer(minimum=100), 10_000),
            "max_payload_bytes": Key(integer(minimum=1024), 65_536),
            "protocol": Key(one_of("3.1.1", "5"), "3.1.1"),
        }),
        "health": Section({
            "listen": Key(host_port, "127.0.0.1:8787"),
            "token": secret,
            "token_file": secret_file,
            "max_connections": Key(integer(1, 256), 8),
            "request_timeout_s": Key(number(minimum=0.5), 5.0),
        }),
        "audio": Section({
            "output": Key(audio_output(base), "alsa:default"),
            "rate": Key(integer(8_000, 192_000), 48_000),
            "mixer": Section({"card": Key(integer(minimum=0)), "control": Key(text)},
                             nullable=True),
            "default_volume": Key(volume, 70),
            "emergency_volume": Key(volume, 100),
            "chime": Key(chime(base), None),
            "dead_air_s": Key(seconds, 5.0),
            "dead_air_dbfs": Key(dbfs, -50.0),
            "decoder_hang_s": Key(number(minimum=1), 3.0),
            "stream_caching_ms": Key(integer(minimum=0), 300),
        }),
        "amplifier": Section({
            "backend": Key(one_of("gpio", "sim", "none"), "gpio"),
            "gpio": gpio_line(17),
            "warmup_s": Key(seconds, 2.0),
            "idle_off_s": Key(seconds, 300.0),
        }),
        "fm": Section({
            "backend": Key(one_of("rtl_fm", "rtl_tcp", "none"), "rtl_fm"),
            "rtl_tcp": Key(host_port, "127.0.0.1:1234"),
            "gain_db": Key(gain_db, None),
            "ppm": Key(integer(-1000, 1000), 0),
            "squelch_dbfs": Key(dbfs, -30.0),
            "sample_rate": Key(sdr_sample_rate, 240_000),
        }),
        "clock": Section({
            "trusted_by": Key(clock_witnesses, DEFAULT_WITNESSES),
            "backend": Key(one_of("system", "sim"), "system"),
        }),
        "tts": Section({
            "engine": Key(one_of("espeak-ng"), "espeak-ng"),
            "voice": Key(text, "vi"),
        }),
        "line_in": Section({
            "input": Key(line_input(base), None),
            "vox": Key(boolean, False),
            "threshold_dbfs": Key(dbfs, -30.0),
            "on_after_s": Key(seconds, 0.5),
            "off_after_s": Key(seconds, 10.0),
            "priority": Key(one_of("priority", "live", "emergency"), "live"),
            "chime": Key(boolean, False),
        }),
        "recording": Section({
            "enabled": Key(boolean, True),
            "dir": Key(path_in(base), Path("/var/lib/broadcast-agent/recordings")),
            "max_bytes": Key(integer(minimum=1), 1_000_000_000),
            "max_days": Key(number(minimum=0), 14.0),
            "segment_s": Key(number(minimum=5, maximum=3600), 60.0),
        }),
        "power": Section({
            "backend": Key(one_of("gpio", "sim", "none"), "none"),
            "gpio": gpio_line(27),
        }),
        "update": Section({
            "commit_after_s": Key(number(minimum=1), 300.0),
            "window": Key(maintenance_window, "01:00-04:00"),
            "max_bytes": Key(integer(minimum=1_000_000), 200_000_000),
        }),
    })
