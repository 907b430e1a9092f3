"""The checks of a value of agent.yaml: each returns the value as the Config holds it, or
raises `Invalid` saying what is wrong with it."""

from __future__ import annotations

import base64
import binascii
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent.config.addresses import parse_broker_uri, parse_host_port
from agent.config.validation import Check, Invalid, describe, did_you_mean
from agent.core.clock_trust import WITNESSES
from agent.update.moment import Window


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


def host_port(value: object) -> str:
    return _address(value, parse_host_port, "HOST:PORT (port 1-65535, IPv6 in brackets)")


def broker_uri(value: object) -> str:
    return _address(value, parse_broker_uri, "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")


def _address(value: object, parse: Callable[[str], object], expected: str) -> str:
    try:
        parse(text(value))
    except ValueError:
        raise Invalid(f"expected {expected}, got {value!r}") from None
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


def clock_witnesses(value: object) -> tuple[str, ...]:
    """A non-empty list of what may vouch for the clock (agent.core.clock_trust)."""
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a non-empty list of {', '.join(WITNESSES)}, "
                      f"got {describe(value)}")
    witness = one_of(*WITNESSES)
    return tuple(str(witness(item)) for item in value)
