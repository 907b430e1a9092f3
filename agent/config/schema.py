"""The keys of agent.yaml (docs/config.md) and the walker that checks a merged document.

A document arrives as a tree of `Marked` values that remember the file and line each value
was written on, so every problem can be reported like a compiler would, and the walker
keeps going after a problem so that one run lists every error.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import enum
import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from agent.core.clock_trust import DEFAULT_WITNESSES, WITNESSES
from agent.update.moment import Window


@dataclass(frozen=True)
class Mark:
    file: Path
    line: int


@dataclass(frozen=True)
class Problem:
    mark: Mark
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.mark.file}:{self.mark.line}: {self.key}: {self.message}"


@dataclass(frozen=True)
class Marked:
    """A YAML value (a dict of Marked, a list of Marked, or a scalar) and where it was written."""

    value: object
    mark: Mark


class Invalid(ValueError):
    """Raised by a check; the message says what is wrong with the value."""


Check = Callable[[object], object]


class _Required(enum.Enum):
    REQUIRED = enum.auto()


REQUIRED = _Required.REQUIRED


@dataclass(frozen=True)
class Key:
    check: Check
    default: object = REQUIRED


@dataclass(frozen=True)
class ListKey:
    """A list whose items each pass `item`; the default is the empty list."""

    item: Check


@dataclass(frozen=True)
class Section:
    keys: Mapping[str, Key | ListKey | Section]
    nullable: bool = False  # null (the default) or a mapping with these keys


@dataclass
class Validated:
    values: dict[str, object]
    homes: dict[str, list[str]]  # key name -> the dotted paths of every section that has it
    marks: dict[str, Mark] = field(default_factory=dict)  # dotted key -> where it was written
    problems: list[Problem] = field(default_factory=list)


def describe(value: object) -> str:
    """How a parsed YAML value reads in an error message: `string '60'`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def validate_document(doc: Marked, schema: Section) -> Validated:
    result = Validated(values={}, homes={})
    _index_homes(schema, "", result.homes)
    result.values = _walk_section(doc, schema, "", result)
    return result


def _index_homes(section: Section, prefix: str, homes: dict[str, list[str]]) -> None:
    for name, spec in section.keys.items():
        homes.setdefault(name, []).append(prefix)
        if isinstance(spec, Section):
            _index_homes(spec, _join(prefix, name), homes)


def _unknown_key_message(name: str, section: Section, homes: dict[str, list[str]]) -> str:
    """Suggests a near miss in the same section, else the section(s) where the key belongs."""
    suggestion = did_you_mean(name, list(section.keys))
    if not suggestion and name in homes:
        places = " or ".join(f"'{_join(home, name)}'" if home else f"top-level '{name}'"
                             for home in homes[name])
        suggestion = f"; did you mean {places}?"
    return "unknown key" + suggestion


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk_section(node: Marked, section: Section, prefix: str, out: Validated) -> dict[str, object]:
    assert isinstance(node.value, dict)
    given: dict[str, Marked] = node.value
    for name, child in given.items():
        if name not in section.keys:
            message = _unknown_key_message(name, section, out.homes)
            out.problems.append(Problem(child.mark, _join(prefix, name), message))
    values: dict[str, object] = {}
    for name, spec in section.keys.items():
        key = _join(prefix, name)
        written = given.get(name)
        if written is not None:
            out.marks[key] = written.mark
            values[name] = _walk_value(written, spec, key, out)
        elif isinstance(spec, Key) and spec.default is REQUIRED:
            out.problems.append(Problem(node.mark, key, "required key missing"))
        elif isinstance(spec, Key):
            values[name] = spec.default
        elif isinstance(spec, ListKey):
            values[name] = ()
        elif spec.nullable:
            values[name] = None
        else:
            values[name] = _walk_section(Marked({}, node.mark), spec, key, out)
    return values


def _walk_value(node: Marked, spec: Key | ListKey | Section, key: str, out: Validated) -> object:
    if isinstance(spec, Section):
        if node.value is None and spec.nullable:
            return None
        if not isinstance(node.value, dict):
            return _fail(node, key, f"expected a mapping, got {describe(plain(node))}", out)
        return _walk_section(node, spec, key, out)
    if isinstance(spec, ListKey):
        if not isinstance(node.value, list):
            return _fail(node, key, f"expected a list, got {describe(plain(node))}", out)
        items = tuple(_check(item, spec.item, f"{key}[{i}]", out)
                      for i, item in enumerate(node.value))
        for i, item in enumerate(items):
            if item is not None and item in items[:i]:
                _fail(node.value[i], f"{key}[{i}]", f"repeats {key}[{items.index(item)}]", out)
        return items
    return _check(node, spec.check, key, out)


def _check(node: Marked, check: Check, key: str, out: Validated) -> object:
    try:
        return check(plain(node))
    except Invalid as problem:
        return _fail(node, key, str(problem), out)


def _fail(node: Marked, key: str, message: str, out: Validated) -> object:
    """Records the problem; the value becomes None (never used: the config is refused)."""
    out.problems.append(Problem(node.mark, key, message))
    return None


def plain(node: Marked) -> object:
    if isinstance(node.value, dict):
        return {name: plain(child) for name, child in node.value.items()}
    if isinstance(node.value, list):
        return [plain(item) for item in node.value]
    return node.value


# ---- checks -------------------------------------------------------------------------------

def optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def number(minimum: float | None = None, maximum: float | None = None
           ) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {describe(value)}")
        _in_range(value, minimum, maximum)
        return float(value)
    return check


def integer(minimum: int | None = None, maximum: int | None = None
            ) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {describe(value)}")
        _in_range(value, minimum, maximum)
        return value
    return check


def _in_range(value: float, minimum: float | None, maximum: float | None) -> None:
    def show(number: float) -> str:
        return str(int(number)) if float(number).is_integer() else str(number)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise Invalid(f"must be between {show(minimum)} and {show(maximum)}, got {show(value)}")
    if minimum is not None and value < minimum:
        raise Invalid(f"must be at least {show(minimum)}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise Invalid(f"must be at most {show(maximum)}, got {show(value)}")


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def text(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    hint = " (quote it to make it a string)" if isinstance(value, int | float) else ""
    raise Invalid(f"expected a non-empty string, got {describe(value)}{hint}")


def one_of(*choices: str) -> Check:
    def check(value: object) -> str:
        if value not in choices:
            got = value if isinstance(value, str) else describe(value)
            raise Invalid(f"must be one of {', '.join(choices)}, got '{got}'"
                          + did_you_mean(str(value), list(choices)))
        return str(value)
    return check


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


def name_segment(value: object) -> str:
    """A name that goes into MQTT topics and URL paths as one segment."""
    if not re.fullmatch(_NAME, text(value)):
        raise Invalid(f"{value!r} must be up to 128 letters, digits, '.', '_' or '-' (no '/', "
                      "'+', '#', spaces)")
    return str(value)


def topic_prefix(value: object) -> str:
    if not re.fullmatch(rf"{_NAME}(/{_NAME})*", text(value)):
        raise Invalid(f"{value!r} must be '/'-separated names of letters, digits, '.', '_' "
                      "or '-', with no wildcard and no leading or trailing '/'")
    return str(value)


def timezone(value: object) -> str:
    name = text(value)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        raise Invalid(f"unknown time zone {name!r} (an IANA name such as Asia/Ho_Chi_Minh)"
                      ) from None
    return name


def http_url(value: object) -> str:
    url = text(value)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # "http://[x": an unclosed IPv6 literal
        host = None
    if host is None or parts.scheme not in ("http", "https"):
        raise Invalid(f"expected an http:// or https:// URL with a host, got {url!r}")
    return url  # a trailing slash matters: relative media URLs resolve under it (RFC 3986)


def public_key(value: object) -> bytes:
    """Raw 32-byte Ed25519 public key, standard base64 with padding."""
    try:
        raw = base64.b64decode(text(value), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("not valid base64") from None
    if len(raw) != 32:
        raise Invalid(f"an Ed25519 public key is 32 bytes, this one decodes to {len(raw)}")
    return raw


class HostPort(NamedTuple):
    host: str
    port: int


def parse_host_port(value: str) -> HostPort:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return HostPort(host, int(port))


def host_port(value: object) -> str:
    try:
        parse_host_port(text(value))
    except ValueError:
        raise Invalid(f"expected HOST:PORT (port 1-65535, IPv6 in brackets), got {value!r}"
                      ) from None
    return str(value)


class BrokerUri(NamedTuple):
    scheme: str  # "mqtt" or "mqtts" (TLS)
    host: str
    port: int


def parse_broker_uri(value: str) -> BrokerUri:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.username \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(value)
    port = parts.port  # raises ValueError when out of range
    return BrokerUri(parts.scheme, parts.hostname, port or (8883 if parts.scheme == "mqtts"
                                                            else 1883))


def broker_uri(value: object) -> str:
    try:
        parse_broker_uri(text(value))
    except ValueError:
        raise Invalid(f"expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {value!r}"
                      ) from None
    return str(value)


def gain_db(value: object) -> float | None:
    """`auto` (None: the tuner's automatic gain) or a gain in dB."""
    return None if value == "auto" else _gain_number(value)


def _gain_number(value: object) -> float:
    try:
        return number()(value)
    except Invalid:
        raise Invalid(f"expected auto or a number of dB, got {describe(value)}") from None


def sdr_sample_rate(value: object) -> int:
    rate = integer(240_000, 3_200_000)(value)
    if 300_000 < rate <= 900_000:
        raise Invalid(f"the RTL2832U cannot sample between 300000 and 900000 S/s, got {rate}")
    return rate


def path_in(base: Path, must_exist: bool = False) -> Check:
    """A path; a relative one is taken from `base`, the main config file's directory."""
    def check(value: object) -> Path:
        path = base / text(value)
        if must_exist and not path.is_file():
            raise Invalid(f"no such file: {path}")
        return path
    return check


def audio_output(base: Path) -> Check:
    def check(value: object) -> str:
        kind, _, arg = text(value).partition(":")
        if kind == "alsa" and arg:
            return str(value)
        if kind == "wav" and arg:
            path = base / arg
            if not path.parent.is_dir():
                raise Invalid(f"directory {path.parent} does not exist")
            return f"wav:{path}"
        raise Invalid(f"expected alsa:<pcm name> or wav:<path>, got {value!r}")
    return check


def line_input(base: Path) -> Check:
    """`alsa:<pcm name>`, `wav:<path>` (taken from `base`; a missing file is the running
    agent's fault line_in_failed, not a config error) or null: no line input."""
    def check(value: object) -> str | None:
        if value is None:
            return None
        kind, _, arg = value.partition(":") if isinstance(value, str) else ("", "", "")
        if kind == "alsa" and arg:
            return f"alsa:{arg}"
        if kind == "wav" and arg:
            return f"wav:{base / arg}"
        raise Invalid(f"expected alsa:<pcm name>, wav:<path> or null, got {describe(value)}")
    return check


def chime(base: Path) -> Check:
    """`builtin` (None) or a sound file."""
    sound_file = path_in(base, must_exist=True)
    return lambda value: None if value == "builtin" else sound_file(value)


def maintenance_window(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be HH:MM-HH:MM (local time), got {describe(value)}")
    try:
        Window.parse(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def gpio_line(line: int) -> Section:
    """`{chip, line, active_high}` of a GPIO line (the amplifier's relay, the mains sense)."""
    return Section({
        "chip": Key(text, "gpiochip0"),
        "line": Key(integer(minimum=0), line),
        "active_high": Key(boolean, True),
    })


def clock_witnesses(value: object) -> tuple[str, ...]:
    """A non-empty list of what may vouch for the clock (agent.core.clock_trust)."""
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a non-empty list of {', '.join(WITNESSES)}, "
                      f"got {describe(value)}")
    witness = one_of(*WITNESSES)
    return tuple(str(witness(item)) for item in value)


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
