"""The documented contracts are machine-checkable and agree with the code.

- every JSON Schema under docs/schemas/ is a valid draft 2020-12 schema;
- docs/openapi/source-api.yaml parses and every $ref in it resolves;
- every example of the normative contracts (copied here, so the test needs no checkout of
  ../shared) and every example in docs/contracts/*.md validates;
- realistic mistakes, one per rule that matters, are rejected;
- docs/faults.md, the fault code enum of the schemas and agent.core.faults list the same codes.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator
from referencing import Resource
from referencing.jsonschema import DRAFT202012

from agent.config import schema as config_schema
from agent.config.validation import Section
from agent.core.faults import FAULT_SEVERITY
from agent.core.signing import load_public_key, sign, verify
from tests.support.schemas import (
    DOCS_DIR,
    SchemaViolation,
    kinds,
    load_schema,
    problems,
    registry,
    schema_uri,
    validate,
)

OPENAPI_PATH = DOCS_DIR / "openapi" / "source-api.yaml"
CONTRACT_DOCS = ("source-api", "mqtt", "health-http", "config-and-cli", "hil")
SHA = "5f2b4c1d9e8a7f6b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"

# ---- the examples of /work/shared/contracts/*.md, placeholders filled in ----------------

SCHEDULE: dict[str, Any] = {
    "version": 17,
    "device_id": "xa-phu-loc-cum-01",
    "timezone": "Asia/Ho_Chi_Minh",
    "media": [
        {"id": "m-101", "url": "/api/v1/media/m-101", "sha256": SHA, "size": 482113,
         "duration_s": 30.1, "title": "Bản tin sáng", "mime": "audio/mpeg"},
    ],
    "programs": [
        {"id": "p-1", "title": "Bản tin sáng", "priority": "scheduled",
         "source": {"type": "media", "items": ["m-101", "m-102"]},
         "start": "06:00:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
         "valid_from": "2026-11-01", "valid_until": "2026-12-31",
         "volume": 80, "chime": True},
        {"id": "p-2", "title": "Tiếp sóng VOV1", "priority": "scheduled",
         "source": {"type": "fm", "frequency_mhz": 100.0},
         "start": "11:00:00", "duration_s": 1800},
        {"id": "p-3", "title": "Phát trực tiếp huyện", "priority": "live",
         "source": {"type": "stream", "url": "https://live.example.invalid/huyen.mp3"},
         "dates": ["2026-11-24"], "start": "19:00:00", "duration_s": 3600},
        {"id": "p-4", "title": "Thông báo", "priority": "scheduled",
         "source": {"type": "tts", "text": "Kính mời bà con ...", "lang": "vi"},
         "start": "17:30:00", "repeat": 2},
    ],
    "fm_fallback": {"frequency_mhz": 100.0},
}

STATUS: dict[str, Any] = {
    "device_id": "xa-phu-loc-cum-01", "online": True, "at": "2026-11-23T06:00:01+07:00",
    "agent_version": "0.3.0", "uptime_s": 8123, "power": "mains",
    "update": {"state": "idle", "version": "0.3.0", "previous": "0.2.1"},
    "line_in": {"level_dbfs": -62.0, "on_air": False},
    "recording": {"since": "2026-11-09T06:00:00.000+07:00", "bytes": 48123456},
    "playing": {"source": "media", "priority": "scheduled", "program_id": "p-1",
                "media_id": "m-101", "title": "Bản tin sáng",
                "started_at": "2026-11-23T06:00:00.000+07:00"},
    "volume": 80, "amplifier": "on", "mqtt": {"connected": True},
    "source": {"reachable": True, "last_sync_at": "2026-11-23T05:59:30.125+07:00",
               "schedule_version": 17},
    "cache": {"items": 42, "bytes": 81234567, "free_bytes": 1234567890, "missing": 0},
    "fm": {"frequency_mhz": 100.0, "signal_dbfs": -23.5},
    "faults": [{"code": "stream_unavailable", "message": "huyen.mp3: connection refused",
                "since": "2026-11-23T05:40:00.000+07:00"}],
    "system": {"cpu_temp_c": 51.2, "load1": 0.12, "disk_free_bytes": 123,
               "clock_synced": True},
}

COMMAND: dict[str, Any] = {
    "id": "0b6f3c52-9a53-4f0e-9d1c-3f1f6f0f7a10", "type": "emergency",
    "args": {"media_id": "m-900", "repeat": 3},
    "issued_at": "2026-11-23T08:15:00+07:00", "expires_at": "2026-11-23T08:20:00+07:00",
}

PLAY_REPORT: dict[str, Any] = {
    "id": "7d9c1a2e-3b4f-4c5d-8e6f-7a8b9c0d1e2f", "type": "play",
    "at": "2026-11-23T06:00:31.200+07:00",
    "program_id": "p-1", "media_id": "m-101", "source": "media", "priority": "scheduled",
    "started_at": "2026-11-23T06:00:00.000+07:00", "ended_at": "2026-11-23T06:00:30.100+07:00",
    "played_s": 30.1, "outcome": "completed", "sha256": SHA, "title": "Bản tin sáng",
}

FAULT_REPORT: dict[str, Any] = {
    "id": "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", "type": "fault",
    "at": "2026-11-23T05:40:00.000+07:00", "code": "stream_unavailable",
    "message": "huyen.mp3: connection refused", "raised_at": "2026-11-23T05:40:00.000+07:00",
    "cleared_at": None,
}

ACK: dict[str, Any] = {"command_id": COMMAND["id"], "status": "accepted", "reason": None,
                       "at": "2026-11-23T08:15:00.210+07:00"}

CONFIG_EXAMPLE = """
device_id: xa-phu-loc-cum-01            # *
groups: [huyen-phu-loc, tinh-dong-nai]  # group command topics to follow
timezone: Asia/Ho_Chi_Minh              # used when a schedule names none
state_dir: /var/lib/broadcast-agent     # applied schedule, outbox, seen command ids, cache index
late_start_grace_s: 120
source:
  url: https://nguon.example.invalid/api/v1   # *
  token: "..."                                # or token_file
  poll_interval_s: 60
  max_backoff_s: 600
  verify_tls: true
  ca_file: null
  client_cert: null
  client_key: null
  public_key: null                            # base64 Ed25519; when set, schedules must be signed
cache:
  dir: /var/cache/broadcast-agent
  max_bytes: 2000000000
mqtt:
  brokers: ["mqtts://mqtt.example.invalid:8883"]   # mqtt:// or mqtts://, tried in turn
  username: null
  password: null                                  # or password_file
  ca_file: null
  client_cert: null
  client_key: null
  topic_prefix: tt
  heartbeat_s: 60
  keepalive_s: 30
  command_public_key: null                        # base64 Ed25519; when set, commands signed
  max_command_age_s: 300
health:
  listen: 127.0.0.1:8787
  token: null
audio:
  output: alsa:default        # alsa:<pcm name> | wav:<path> (hil.md)
  rate: 48000
  mixer: null                 # {card: 0, control: PCM} for a hardware mixer; else software gain
  default_volume: 70
  emergency_volume: 100
  chime: builtin              # builtin | path to a sound file
  dead_air_s: 5               # a live source quieter than dead_air_dbfs this long is dead
  dead_air_dbfs: -50
amplifier:
  backend: gpio               # gpio | sim | none
  gpio: {chip: gpiochip0, line: 17, active_high: true}
  warmup_s: 2.0               # power on this long before the first sample
  idle_off_s: 300             # power off after this long with nothing playing
fm:
  backend: rtl_fm             # rtl_fm | rtl_tcp | none
  rtl_tcp: 127.0.0.1:1234
  gain_db: auto
  ppm: 0
  squelch_dbfs: -30           # channel power below this: the station counts as lost (hil.md)
tts:
  engine: espeak-ng
  voice: vi
"""

MINIMAL_CONFIG: dict[str, Any] = {"device_id": "xa-1",
                                  "source": {"url": "http://127.0.0.1:8080/api/v1"}}


def _event(type_: str, **body: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": type_, "at": "2026-11-23T06:00:00.000+07:00",
            **body}


def _signed_command() -> dict[str, Any]:
    command = dict(COMMAND)
    command["signature"] = sign(command, Ed25519PrivateKey.generate())
    return command


def _play_record() -> dict[str, Any]:
    return {k: v for k, v in PLAY_REPORT.items() if k not in ("type", "at")}


FAULT_CHANGE = {"code": "audio_output", "severity": "error", "message": "ALSA: device busy",
                "raised_at": "2026-11-23T06:00:00.000+07:00"}

VALID: list[tuple[str, Any]] = [
    ("schedule", SCHEDULE),
    ("schedule", {"version": 0, "device_id": "xa-1", "media": [], "programs": []}),
    ("schedule", {"version": 1, "device_id": "xa-1", "media": [], "programs": [
        {"id": "p-b", "title": "Bản tin ưu tiên", "priority": "priority",
         "source": {"type": "tts", "text": "Thông báo", "lang": "vi"}, "start": "07:00:00",
         "repeat": 3, "repeat_gap_s": 30},
        {"id": "p-x", "title": "Đài xã", "source": {"type": "fm", "frequency_mhz": 60.25},
         "start": "08:00:00", "duration_s": 600}]}),
    ("status", STATUS),
    ("status", {**STATUS, "playing": None, "fm": None, "faults": [],
                "source": {"reachable": None, "last_sync_at": None, "schedule_version": None},
                "system": {**STATUS["system"], "cpu_temp_c": None},
                "next": [{"program_id": "p-4", "title": "Thông báo", "priority": "scheduled",
                          "start": "2026-11-23T17:30:00+07:00"}]}),
    ("status", {**STATUS, "playing": {"source": "fm", "priority": "live",
                                      "program_id": "cmd:" + COMMAND["id"],
                                      "frequency_mhz": 99.5, "title": None,
                                      "started_at": "2026-11-23T06:00:00+07:00"}}),
    ("state", STATUS),
    ("state", {"device_id": "xa-phu-loc-cum-01", "online": False}),
    ("offline-state", {"device_id": "xa-phu-loc-cum-01", "online": False}),
    ("command", COMMAND),
    ("command", _signed_command()),
    ("command", {**COMMAND, "type": "play_now", "args": {"url": "https://x.invalid/a.mp3",
                                                        "priority": "emergency"}}),
    ("command", {**COMMAND, "type": "emergency", "args": {"text": "Bão số 9", "volume": 100}}),
    ("command", {**COMMAND, "args": {"media_id": "m-900", "url": "https://x.invalid/m-900.mp3"}}),
    ("command", {**COMMAND, "type": "stop", "args": {"priority": "live"}}),
    ("command", {"id": COMMAND["id"], "type": "stop", "issued_at": COMMAND["issued_at"]}),
    ("command", {**COMMAND, "type": "set_volume", "args": {"volume": 0}}),
    ("command", {**COMMAND, "type": "fm_relay", "args": {"frequency_mhz": 100.0,
                                                        "duration_s": 600}}),
    ("command", {**COMMAND, "type": "fm_relay", "args": {"frequency_mhz": 54,
                                                        "duration_s": 600,
                                                        "priority": "priority"}}),
    ("command", {**COMMAND, "type": "play_now", "args": {"media_id": "m-1",
                                                        "priority": "priority"}}),
    ("command", {**COMMAND, "type": "sync_now", "args": {}}),
    ("command", {**COMMAND, "type": "amplifier", "args": {"on": False}}),
    ("command", {**COMMAND, "type": "update", "args": {
        "version": "0.4.0", "url": "https://updates.invalid/broadcast-agent-0.4.0.bundle",
        "sha256": SHA, "size": 612_345}}),
    ("ack", ACK),
    ("ack", {**ACK, "status": "rejected", "reason": "replay: command id already seen"}),
    ("ack", {**ACK, "status": "completed"}),
    ("ack", {**ACK, "status": "failed", "reason": "decoder_crashed: m-900 could not be decoded"}),
    ("report", PLAY_REPORT),
    ("report", FAULT_REPORT),
    ("report", {**FAULT_REPORT, "cleared_at": "2026-11-23T06:10:00+07:00"}),
    ("report", {"id": str(uuid.uuid4()), "type": "status", **STATUS}),
    ("report", {"id": str(uuid.uuid4()), "type": "play", "at": PLAY_REPORT["at"],
                "program_id": "cmd:" + COMMAND["id"], "text": "Bão số 9", "source": "tts",
                "priority": "emergency", "started_at": PLAY_REPORT["started_at"],
                "ended_at": PLAY_REPORT["ended_at"], "played_s": 12.5,
                "outcome": "preempted"}),
    ("event", _event("play_started", program_id="p-1", source="media", priority="scheduled",
                     media_id="m-101", title="Bản tin sáng",
                     started_at="2026-11-23T06:00:00+07:00")),
    ("event", _event("play_finished", record=_play_record())),
    ("event", _event("preempted", program_id="p-1", priority="scheduled",
                     by_program_id="cmd:" + COMMAND["id"], by_priority="emergency")),
    ("event", _event("fault_raised", **FAULT_CHANGE, cleared_at=None)),
    ("event", _event("fault_cleared", **FAULT_CHANGE,
                     cleared_at="2026-11-23T06:05:00+07:00")),
    ("event", _event("schedule_applied", version=17)),
    ("event", _event("media_cached", media_id="m-101", sha256=SHA, size=482113)),
    ("event", _event("media_missing", media_id="m-102", program_id="p-1")),
    ("event", _event("config_reloaded")),
    ("event", _event("update_started", version="0.4.0", previous="0.3.0",
                     command_id=COMMAND["id"])),
    ("event", _event("update_committed", version="0.4.0", previous="0.3.0")),
    ("event", _event("update_rolled_back", version="0.4.0", previous="0.3.0",
                     reason="crash_loop: 0.4.0 started 3 times without proving healthy")),
    ("healthz", {"status": "ok"}),
    ("healthz", {"status": "degraded", "faults": STATUS["faults"]}),
    ("config", yaml.safe_load(CONFIG_EXAMPLE)),
    ("config", MINIMAL_CONFIG),
]


@pytest.mark.parametrize("kind", kinds())
def test_every_schema_is_a_valid_draft_2020_12_schema(kind: str) -> None:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_ref_between_schemas_resolves() -> None:
    for kind in kinds():
        resolver = registry().resolver(base_uri=schema_uri(kind))
        for ref in _refs(load_schema(kind)):
            assert resolver.lookup(ref).contents is not None, f"{kind}: {ref}"


@pytest.mark.parametrize(("kind", "document"), VALID,
                         ids=[f"{i}-{kind}" for i, (kind, _) in enumerate(VALID)])
def test_contract_examples_are_valid(kind: str, document: Any) -> None:
    validate(kind, document)


def test_example_configs_of_the_repository_are_valid() -> None:
    for path in sorted((DOCS_DIR.parent / "config").glob("*.yaml")):
        validate("config", yaml.safe_load(path.read_text(encoding="utf-8")))


# ---- mistakes the schemas must catch --------------------------------------------------

_DROP = object()


def _with(document: Any, path: str, value: Any) -> Any:
    """A deep copy of ``document`` with the dotted ``path`` set to ``value`` (or removed)."""
    result = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is _DROP:
        del node[key]
    else:
        node[key] = value
    return result


INVALID: list[tuple[str, str, Any, Any, str]] = [
    # (kind, base name, path, value, a fragment of the expected message)
    ("schedule", "SCHEDULE", "version", "17", "not of type 'integer'"),
    ("schedule", "SCHEDULE", "programs", _DROP, "'programs' is a required property"),
    ("schedule", "SCHEDULE", "programs.0.start", "6:00", "does not match"),
    ("schedule", "SCHEDULE", "programs.0.start", "24:00:00", "does not match"),
    ("schedule", "SCHEDULE", "programs.0.start", "06:00", "does not match"),
    ("schedule", "SCHEDULE", "programs.0.days", ["monday"], "is not one of"),
    ("schedule", "SCHEDULE", "programs.0.days", ["mon", "mon"], "non-unique"),
    ("schedule", "SCHEDULE", "programs.0.valid_until", "2026-13-01", "does not match"),
    ("schedule", "SCHEDULE", "programs.0.valid_until", "2026-02-30", "is not a 'date'"),
    ("schedule", "SCHEDULE", "programs.2.dates", ["24/11/2026"], "does not match"),
    ("schedule", "SCHEDULE", "programs.0.volume", 101, "greater than the maximum"),
    ("schedule", "SCHEDULE", "programs.0.volume", 0.8, "not of type 'integer'"),
    ("schedule", "SCHEDULE", "programs.3.repeat", 0, "less than the minimum"),
    ("schedule", "SCHEDULE", "programs.0.priority", "urgent", "is not one of"),
    ("schedule", "SCHEDULE", "programs.0.source.items", [], "should be non-empty"),
    ("schedule", "SCHEDULE", "programs.0.source.type", "file", "is not one of"),
    ("schedule", "SCHEDULE", "programs.1.duration_s", _DROP, "'duration_s' is a required"),
    ("schedule", "SCHEDULE", "programs.2.duration_s", 0, "less than or equal to the minimum"),
    ("schedule", "SCHEDULE", "programs.1.source.frequency_mhz", 100000, "greater than"),
    ("schedule", "SCHEDULE", "programs.2.source.url", "live/huyen.mp3", "does not match"),
    ("schedule", "SCHEDULE", "programs.3.source.text", "", "should be non-empty"),
    ("schedule", "SCHEDULE", "programs.0.chime", "yes", "not of type 'boolean'"),
    ("schedule", "SCHEDULE", "media.0.sha256", "<hex>", "does not match"),
    ("schedule", "SCHEDULE", "media.0.size", -1, "less than the minimum"),
    ("schedule", "SCHEDULE", "fm_fallback.frequency_mhz", "100.0", "not of type 'number'"),
    ("schedule", "SCHEDULE", "programs.1.source.frequency_mhz", 70, "not valid under any"),
    ("schedule", "SCHEDULE", "programs.1.source.frequency_mhz", 53.9, "not valid under any"),
    ("schedule", "SCHEDULE", "programs.3.repeat_gap_s", -1, "less than the minimum"),
    ("schedule", "SCHEDULE", "programs.3.repeat_gap_s", "30", "not of type 'number'"),
    ("report", "PLAY_REPORT", "outcome", "done", "is not one of"),
    ("report", "PLAY_REPORT", "source", "radio", "is not one of"),
    ("report", "PLAY_REPORT", "sha256", _DROP, "'sha256' is a required property"),
    ("report", "PLAY_REPORT", "url", "https://x.invalid/a.mp3", "valid under each of"),
    ("report", "PLAY_REPORT", "media_id", _DROP, "not valid under any"),
    ("report", "PLAY_REPORT", "started_at", "2026-11-23 06:00:00", "does not match"),
    ("report", "PLAY_REPORT", "started_at", "2026-11-23T06:00:00", "does not match"),
    ("report", "PLAY_REPORT", "played_s", -1, "less than the minimum"),
    ("report", "PLAY_REPORT", "id", "42", "is not a 'uuid'"),
    ("report", "PLAY_REPORT", "duration_s", 30.1, "Unevaluated properties"),
    ("report", "PLAY_REPORT", "title", 7, "is not of type 'string', 'null'"),
    ("report", "PLAY_REPORT", "type", "proof", "is not one of"),
    ("report", "FAULT_REPORT", "cleared_at", _DROP, "'cleared_at' is a required"),
    ("report", "FAULT_REPORT", "code", "stream_down", "is not one of"),
    ("status", "STATUS", "playing", _DROP, "'playing' is a required property"),
    ("status", "STATUS", "playing.source", "fm", "'media' was expected"),
    ("status", "STATUS", "playing.started_at", _DROP, "'started_at' is a required"),
    ("status", "STATUS", "volume", 150, "greater than the maximum"),
    ("status", "STATUS", "power", "ups", "is not one of"),
    ("status", "STATUS", "power", _DROP, "'power' is a required property"),
    ("status", "STATUS", "amplifier", True, "is not one of"),
    ("status", "STATUS", "online", False, "True was expected"),
    ("status", "STATUS", "fm", {"frequency_mhz": 100.0}, "'signal_dbfs' is a required"),
    ("status", "STATUS", "faults.0.since", _DROP, "'since' is a required property"),
    ("status", "STATUS", "system.clock_synced", "yes", "not of type 'boolean'"),
    ("status", "STATUS", "cache.missing", -1, "less than the minimum"),
    ("status", "STATUS", "next", [{"program_id": "p-4"}], "'title' is a required"),
    ("status", "STATUS", "uptime", 1, "Unevaluated properties"),
    ("command", "COMMAND", "type", "reboot", "is not one of"),
    ("command", "COMMAND", "args.text", "Bão", "False schema does not allow"),
    ("command", "COMMAND", "args.text", " ", "does not match"),
    ("command", "COMMAND", "args.url", "ftp://x.invalid/a.mp3", "does not match"),
    ("command", "COMMAND", "args.media_id", _DROP, "not valid under any"),
    ("command", "COMMAND", "args.repeat", 0, "less than the minimum"),
    ("command", "COMMAND", "args.repeat", 1000, "greater than the maximum"),
    ("command", "COMMAND", "args.volumn", 90, "Additional properties are not allowed"),
    ("command", "COMMAND", "issued_at", "2026-11-23T08:15:00", "does not match"),
    ("command", "COMMAND", "issued_at", _DROP, "'issued_at' is a required property"),
    ("command", "COMMAND", "signature", "ed25519:abc", "does not match"),
    ("command", "COMMAND", "args", _DROP, "'args' is a required property"),
    ("ack", "ACK", "status", "ok", "is not one of"),
    ("ack", "ACK", "reason", "because", "does not match"),
    ("ack", "ACK", "reason", _DROP, "'reason' is a required property"),
    ("config", "MINIMAL_CONFIG", "source", _DROP, "'source' is a required property"),
    ("config", "MINIMAL_CONFIG", "device_id", "xa/1", "does not match"),
    ("config", "MINIMAL_CONFIG", "log_level", "TRACE", "is not one of"),
    ("config", "MINIMAL_CONFIG", "poll_interval_s", 60, "Additional properties"),
    ("config", "MINIMAL_CONFIG", "source.url", "nguon.example.invalid", "does not match"),
    ("config", "MINIMAL_CONFIG", "source.poll_interval_s", 4, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "source.pol_interval_s", 60, "Additional properties"),
    ("config", "MINIMAL_CONFIG", "source.public_key", "c2hvcnQ=", "does not match"),
    ("config", "MINIMAL_CONFIG", "mqtt", {"outbox_max": 99}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "mqtt", {"max_payload_bytes": 512}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "mqtt", {"brokers": ["tcp://broker:1883"]}, "does not match"),
    ("config", "MINIMAL_CONFIG", "mqtt", {"topic_prefix": "tt/#"}, "does not match"),
    ("config", "MINIMAL_CONFIG", "health", {"max_connections": 0}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "health", {"request_timeout_s": 0.1}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "health", {"listen": "0.0.0.0:70000"}, "does not match"),
    ("config", "MINIMAL_CONFIG", "fm", {"sample_rate": 100000}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "fm", {"sample_rate": 500000}, "should not be valid"),
    ("config", "MINIMAL_CONFIG", "audio", {"decoder_hang_s": 0.5}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "audio", {"stream_caching_ms": -1}, "less than the minimum"),
    ("config", "MINIMAL_CONFIG", "audio", {"default_volume": 101}, "greater than the maximum"),
    ("config", "MINIMAL_CONFIG", "audio", {"output": "pulse:default"}, "does not match"),
    ("config", "MINIMAL_CONFIG", "amplifier", {"backend": "relay"}, "is not one of"),
    ("config", "MINIMAL_CONFIG", "source", {"url": "https://x.invalid", "token": "t",
                                            "token_file": "/etc/t"}, "should not be valid"),
    ("healthz", "HEALTH_OK", "status", "degraded", "'faults' is a required property"),
    ("healthz", "HEALTH_OK", "faults", [], "False schema does not allow"),
    ("offline-state", "OFFLINE", "online", True, "False was expected"),
    ("offline-state", "OFFLINE", "at", "2026-11-23T06:00:00+07:00", "Additional properties"),
]
BASES: dict[str, Any] = {
    "SCHEDULE": SCHEDULE, "PLAY_REPORT": PLAY_REPORT, "FAULT_REPORT": FAULT_REPORT,
    "STATUS": STATUS, "COMMAND": COMMAND, "ACK": ACK, "MINIMAL_CONFIG": MINIMAL_CONFIG,
    "HEALTH_OK": {"status": "ok"}, "OFFLINE": {"device_id": "xa-1", "online": False},
}


@pytest.mark.parametrize(("kind", "base", "path", "value", "expected"), INVALID,
                         ids=[f"{kind}-{path}-{i}" for i, (kind, _, path, _, _)
                              in enumerate(INVALID)])
def test_mistakes_are_rejected_with_a_message_naming_them(
        kind: str, base: str, path: str, value: Any, expected: str) -> None:
    document = _with(BASES[base], path, value)
    with pytest.raises(SchemaViolation) as caught:
        validate(kind, document)
    assert expected in str(caught.value)


def test_event_bodies_are_checked_per_type() -> None:
    record = _play_record()
    del record["id"]
    assert problems("event", _event("play_finished", record=record)) != []
    assert problems("event", _event("play_finished", **_play_record())) != []
    assert problems("event", _event("fault_raised", **FAULT_CHANGE,
                                    cleared_at="2026-11-23T06:05:00+07:00")) != []
    assert problems("event", _event("fault_cleared", **FAULT_CHANGE, cleared_at=None)) != []
    assert problems("event", _event("schedule_applied")) != []
    assert problems("event", _event("media_missing", program_id="p-1")) != []
    assert problems("event", _event("rebooted")) != []


def test_a_violation_lists_every_problem_by_json_path() -> None:
    document = _with(_with(STATUS, "volume", 150), "playing.source", "radio")
    with pytest.raises(SchemaViolation) as caught:
        validate("status", document)
    message = str(caught.value)
    assert "at $.volume: 150 is greater than the maximum of 100" in message
    assert "at $.playing" in message and "'radio'" in message


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no schema 'stauts'; known kinds: ack, "):
        validate("stauts", {})


def test_unknown_fields_of_a_schedule_are_allowed() -> None:
    validate("schedule", {**SCHEDULE, "province": "Đồng Nai",
                          "programs": [{**SCHEDULE["programs"][0], "editor": "x"}]})


# ---- the config schema mirrors the config loader ----------------------------------------

def _is_section(spec: dict[str, Any]) -> bool:
    """An object (or nullable object) with keys of its own."""
    kinds_ = spec.get("type")
    return "properties" in spec and (kinds_ == "object" or "object" in (kinds_ or []))


def _schema_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, spec in node["properties"].items():
        yield prefix + name
        if _is_section(spec):
            yield from _schema_keys(spec, f"{prefix}{name}.")


def _loader_keys(section: Section, prefix: str = "") -> Iterator[str]:
    for name, spec in section.keys.items():
        yield f"{prefix}{name}"
        if isinstance(spec, Section):
            yield from _loader_keys(spec, f"{prefix}{name}.")


def test_config_schema_has_exactly_the_keys_the_loader_accepts() -> None:
    documented = set(_schema_keys(load_schema("config")))
    accepted = set(_loader_keys(config_schema.schema(Path("/"))))
    assert documented == accepted


def test_config_schema_gives_a_default_for_every_optional_key() -> None:
    def walk(node: dict[str, Any], prefix: str) -> Iterator[str]:
        required = set(node.get("required", []))
        for name, spec in node["properties"].items():
            if _is_section(spec):
                yield from walk(spec, f"{prefix}{name}.")
            elif name not in required and "default" not in spec:
                yield prefix + name
    assert list(walk(load_schema("config"), "")) == []


# ---- OpenAPI ------------------------------------------------------------------------------

def _openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _registry_with_openapi() -> Any:
    resource = Resource.from_contents(_openapi(), default_specification=DRAFT202012)
    return registry().with_resource(OPENAPI_PATH.as_uri(), resource)


def _openapi_validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at JSON pointer ``pointer`` of the OpenAPI document."""
    return Draft202012Validator({"$ref": f"{OPENAPI_PATH.as_uri()}#{pointer}"},
                                registry=_registry_with_openapi(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_openapi_document_parses_and_every_ref_resolves() -> None:
    document = _openapi()
    assert document["openapi"].startswith("3.1.")
    resolver = _registry_with_openapi().resolver(base_uri=OPENAPI_PATH.as_uri())
    refs = list(_refs(document))
    assert any(ref.startswith("../schemas/") for ref in refs)
    for ref in refs:
        assert resolver.lookup(ref).contents is not None, ref


def test_openapi_describes_the_contract_operations() -> None:
    document = _openapi()
    paths = document["paths"]
    schedule = paths["/devices/{device_id}/schedule"]["get"]
    assert {"200", "304", "401", "403", "404", "5XX"} <= set(schedule["responses"])
    assert {"ETag", "X-Signature"} <= set(schedule["responses"]["200"]["headers"])
    assert schedule["responses"]["200"]["headers"]["ETag"]["required"] is True
    assert any(p.get("name") == "If-None-Match" for p in schedule["parameters"])
    media = paths["/media/{media_id}"]["get"]
    assert any(p.get("name") == "Range" for p in media["parameters"])
    assert {"200", "206"} <= set(media["responses"])
    assert "Content-Range" in media["responses"]["206"]["headers"]
    reports = paths["/devices/{device_id}/reports"]["post"]
    assert "200" in reports["responses"]
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]


def test_openapi_components_validate_through_the_json_schemas() -> None:
    def component(name: str) -> Draft202012Validator:
        return _openapi_validator(f"/components/schemas/{name}")
    assert list(component("Schedule").iter_errors(SCHEDULE)) == []
    assert list(component("Report").iter_errors(PLAY_REPORT)) == []
    assert list(component("Program").iter_errors(SCHEDULE["programs"][1])) == []
    assert list(component("MediaEntry").iter_errors(SCHEDULE["media"][0])) == []
    broken = _with(SCHEDULE, "programs.0.start", "6h")
    assert list(component("Schedule").iter_errors(broken)) != []


def test_openapi_report_upload_body_validates() -> None:
    body = _openapi_validator("/paths/~1devices~1{device_id}~1reports/post/requestBody/"
                              "content/application~1json/schema")
    assert list(body.iter_errors({"reports": [PLAY_REPORT, FAULT_REPORT]})) == []
    assert list(body.iter_errors({"reports": [{"id": "x"}]})) != []
    assert list(body.iter_errors({"reports": []})) != []


# ---- examples in our own docs -------------------------------------------------------------

_EXAMPLE = re.compile(r"<!-- schema: ([a-z-]+) -->\s*```(json|yaml)\n(.*?)```", re.S)


def _doc_examples() -> list[tuple[str, str, Any]]:
    found = []
    for name in CONTRACT_DOCS:
        text = (DOCS_DIR / "contracts" / f"{name}.md").read_text(encoding="utf-8")
        for kind, syntax, body in _EXAMPLE.findall(text):
            document = json.loads(body) if syntax == "json" else yaml.safe_load(body)
            found.append((f"{name}.md", kind, document))
    return found


def test_every_contract_doc_has_checked_examples() -> None:
    documents = {doc for doc, _, _ in _doc_examples()}
    assert documents == {f"{name}.md" for name in CONTRACT_DOCS if name != "hil"}


@pytest.mark.parametrize(("doc", "kind", "document"), _doc_examples(),
                         ids=[f"{d}-{k}-{i}" for i, (d, k, _) in enumerate(_doc_examples())])
def test_examples_in_our_contract_docs_are_valid(doc: str, kind: str, document: Any) -> None:
    validate(kind, document)


TEST_PUBLIC_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


def test_signed_command_example_in_mqtt_doc_verifies_with_the_test_key() -> None:
    commands = [d for doc, kind, d in _doc_examples() if kind == "command" and "signature" in d]
    assert commands
    for command in commands:
        assert verify(command, load_public_key(TEST_PUBLIC_KEY))


# ---- fault codes ------------------------------------------------------------------------

def _faults_table() -> dict[str, str]:
    text = (DOCS_DIR / "faults.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \| (warning|error) \|", text, re.M)
    return dict(rows)


def test_faults_doc_lists_every_code_with_its_severity_and_no_other() -> None:
    assert _faults_table() == FAULT_SEVERITY


def test_fault_code_enum_of_the_schemas_is_the_code_list() -> None:
    enum = load_schema("common")["$defs"]["fault_code"]["enum"]
    assert sorted(enum) == sorted(FAULT_SEVERITY)
