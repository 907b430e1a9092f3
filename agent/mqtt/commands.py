"""MQTT commands (mqtt.md, "Command"): parsing, signature, args, times, media and replay.

Two steps. :meth:`CommandValidator.screen` needs no clock: size (before any parsing),
JSON, id, signature, type and args, audience (``to``). :meth:`CommandValidator.judge`
needs a trusted clock for most types (agent.core.clock_trust): times (``clock_skew``,
``expired``, ``too_old``), media, replay. While the clock is untrusted a command waits
(agent.mqtt.intake) and is judged when trust comes, or rejected ``clock_unsynced``;
``stop``, ``set_volume`` and ``amplifier`` are judged at once, without the time checks
(a wrong clock must not keep a technician from silencing a loudspeaker).

A payload that is too large, not JSON, or has no usable ``id`` cannot be acknowledged by
id; when no id can be found it comes back as a Rejection with ``command_id=None``
(dropped and counted by the caller). The id of an oversized payload is only looked for
in its first 4 KiB, by pattern: it is never parsed.

Replay protection: once a signed command passed ``screen`` (its signature verified), its
id is remembered durably, whatever the outcome of ``judge``. A command id is single-use:
a copy of a command first rejected for a reason that may pass later (its media was not
cached yet, the clock was not trusted) is still a replay; the central server re-issues
it with a new id. Without ``command_public_key`` anyone may send commands, and only
accepted ones are remembered. Rejections before ``judge`` (bad JSON, signature, args,
audience) write nothing: a flood of them costs no disk. Ids are remembered with their
``issued_at`` and forgotten once ``max_age_s + REPLAY_GRACE_S`` have passed since, when
the ``too_old`` check rejects them anyway (the grace covers the clock being stepped back).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.core.clock import Clock
from agent.core.schedule import FM_BANDS_TEXT, PRIORITY_RANK, in_fm_band
from agent.core.signing import verify
from agent.core.text import check_speech_text
from agent.recording.span import BadSpan, parse_span, parse_time
from agent.state.store import StateStore
from agent.update.bundle import SHA256_HEX, UPDATE_VERSION

if TYPE_CHECKING:
    from nacl.signing import VerifyKey

REJECTION_CODES = ("bad_json", "unknown_type", "bad_args", "bad_signature", "expired",
                   "too_old", "replay", "media_not_cached", "too_large", "wrong_target",
                   "clock_skew", "clock_unsynced")
CLOCK_FREE_TYPES = ("stop", "set_volume", "amplifier")  # judged at once, whatever the clock
PRIORITIES = tuple(PRIORITY_RANK)
ON_DEMAND_PRIORITIES = ("priority", "live", "emergency")  # play_now, fm_relay, line_in
REPLAY_GRACE_S = 86_400.0
_PRUNE_INTERVAL_S = 3_600.0
_MAX_ID_CHARS = 128
_BROKEN_ID = re.compile(r'"id"\s*:\s*"([!#-\[\]-~]{1,' + str(_MAX_ID_CHARS) + '})"')
_MAX_RELAY_DURATION_S = 86_400.0  # fm_relay, line_in


class BadArgs(ValueError):
    """A command's args do not match mqtt.md; the message says which and why."""


@dataclass(frozen=True)
class Command:
    id: str
    type: str
    args: Mapping[str, Any]  # validated, with the contract's constant defaults filled in
    issued_at: float  # Unix seconds
    expires_at: float | None


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str
    command_id: str | None
    command_type: str | None = None

    @property
    def reason(self) -> str:
        """The Ack ``reason``: ``<code>: <human message>``."""
        return f"{self.code}: {self.message}"


# --- args ---------------------------------------------------------------------------------

def _integer(args: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadArgs(f"{key} must be an integer {low}–{high}, got {value!r}")
    return value


def _number(args: Mapping[str, Any], key: str) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadArgs(f"{key} must be a number, got {value!r}")
    return float(value)


def _string(args: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = args[key]
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise BadArgs(f"{key} must be a non-empty string of at most {max_chars} characters")
    return value


def _url(args: Mapping[str, Any]) -> str:
    value = _string(args, "url", 2_048)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadArgs(f"url must be an absolute http(s) URL, got {value!r}")
    return value


def _priority(args: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    value = args["priority"]
    if value not in allowed:
        raise BadArgs(f"priority must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _media_source(args: Mapping[str, Any], allow_text: bool) -> dict[str, Any]:
    """One of media_id, url (and text for emergency); media_id may come with a url fallback."""
    kinds = [k for k in ("media_id", "url", "text") if k in args]
    allowed = "media_id, url or text" if allow_text else "media_id or url"
    if not kinds:
        raise BadArgs(f"one of {allowed} is required")
    if "text" in kinds and len(kinds) > 1:
        raise BadArgs("text cannot be combined with media_id or url")
    out: dict[str, Any] = {}
    if "media_id" in args:
        out["media_id"] = _string(args, "media_id", _MAX_ID_CHARS)
    if "url" in args:
        out["url"] = _url(args)
    if "text" in args:
        try:
            out["text"] = check_speech_text(args["text"])
        except ValueError as exc:
            raise BadArgs(str(exc)) from exc
    return out


_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "emergency": frozenset({"media_id", "url", "text", "repeat", "volume", "start_at"}),
    "play_now": frozenset({"media_id", "url", "priority", "volume", "start_at"}),
    "stop": frozenset({"priority"}),
    "set_volume": frozenset({"volume"}),
    "fm_relay": frozenset({"frequency_mhz", "duration_s", "priority", "start_at"}),
    "line_in": frozenset({"duration_s", "priority", "volume", "start_at"}),
    "sync_now": frozenset(),
    "amplifier": frozenset({"on"}),
    "upload_recording": frozenset({"from", "to"}),
    "update": frozenset({"version", "url", "sha256", "size"}),
}
COMMAND_TYPES = tuple(_ALLOWED_KEYS)


def _required(args: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in args]
    if missing:
        raise BadArgs(f"missing {', '.join(missing)}")


def validate_args(command_type: str, args: object) -> dict[str, Any]:
    """The args of a command of a known type, checked against mqtt.md, with defaults.

    Raises BadArgs with a message for people. ``volume`` of emergency stays absent when
    not given (its default is config ``audio.emergency_volume``, applied by the daemon).
    """
    if not isinstance(args, dict):
        raise BadArgs("args must be an object")
    unknown = sorted(set(args) - _ALLOWED_KEYS[command_type])
    if unknown:
        raise BadArgs(f"unknown argument(s) for {command_type}: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    if command_type in ("emergency", "play_now"):
        out.update(_media_source(args, allow_text=command_type == "emergency"))
    if command_type == "emergency":
        out["repeat"] = _integer(args, "repeat", 1, 100) if "repeat" in args else 1
    if command_type == "play_now":
        out["priority"] = _priority(args, ON_DEMAND_PRIORITIES) if "priority" in args \
            else "live"
    if command_type == "set_volume":
        _required(args, "volume")
    if "volume" in args:
        out["volume"] = _integer(args, "volume", 0, 100)
    if command_type == "stop" and "priority" in args:
        out["priority"] = _priority(args, PRIORITIES)
    if command_type == "fm_relay":
        _required(args, "frequency_mhz", "duration_s")
        frequency = _number(args, "frequency_mhz")
        if not in_fm_band(frequency):
            raise BadArgs(f"frequency_mhz must be within {FM_BANDS_TEXT}, got {frequency}")
        out["frequency_mhz"] = frequency
    if command_type in ("fm_relay", "line_in"):
        _required(args, "duration_s")
        duration = _number(args, "duration_s")
        if not 0 < duration <= _MAX_RELAY_DURATION_S:
            raise BadArgs(f"duration_s must be > 0 and at most {_MAX_RELAY_DURATION_S:g}, "
                          f"got {duration}")
        out["duration_s"] = duration
        out["priority"] = _priority(args, ON_DEMAND_PRIORITIES) if "priority" in args \
            else "live"
    if "start_at" in args:
        out["start_at"] = _timestamp(args, "start_at")  # Unix seconds
    if command_type == "upload_recording":
        _required(args, "from", "to")
        try:
            out["from"], out["to"] = parse_span(args["from"], args["to"])  # Unix seconds
        except BadSpan as exc:
            raise BadArgs(str(exc)) from exc
    if command_type == "update":
        out.update(_update_args(args))
    if command_type == "amplifier":
        _required(args, "on")
        if not isinstance(args["on"], bool):
            raise BadArgs(f"on must be true or false, got {args['on']!r}")
        out["on"] = args["on"]
    return out


def _update_args(args: Mapping[str, Any]) -> dict[str, Any]:
    _required(args, "version", "url", "sha256", "size")
    version = _string(args, "version", 64)
    if not UPDATE_VERSION.match(version):
        raise BadArgs(f"version must be a release version like 1.2.0, got {version!r}")
    sha256 = _string(args, "sha256", 64)
    if not SHA256_HEX.match(sha256):
        raise BadArgs("sha256 must be 64 lowercase hexadecimal digits")
    return {"version": version, "url": _url(args), "sha256": sha256,
            "size": _integer(args, "size", 1, 2**40)}


def _timestamp(doc: Mapping[str, Any], key: str) -> float:
    try:
        return parse_time(key, doc[key])
    except BadSpan as exc:
        raise BadArgs(str(exc)) from None


def _usable_id(doc: object) -> str | None:
    if not isinstance(doc, dict):
        return None
    value = doc.get("id")
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and value.isprintable():
        return value
    return None


# --- validator ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandLimits:
    max_age_s: float = 300.0  # mqtt.max_command_age_s
    max_skew_s: float = 120.0  # mqtt.max_clock_skew_s
    max_payload_bytes: int = 65_536  # mqtt.max_payload_bytes


class CommandValidator:
    def __init__(self, public_key: VerifyKey | None, limits: CommandLimits,
                 store: StateStore, clock: Clock, media_known: Callable[[str], bool], *,
                 device_id: str, groups: tuple[str, ...] = ()) -> None:
        self._key = public_key
        self._limits = limits
        self._store = store
        self._clock = clock
        self._media_known = media_known
        self._device_id = device_id
        self._audiences = {device_id, *(f"group:{g}" for g in groups)}
        self._last_prune: float | None = None

    def check(self, payload: bytes, clock_trusted: bool = True) -> Command | Rejection:
        """``screen`` then ``judge``: a valid, fresh, first-seen command, or why not."""
        screened = self.screen(payload)
        return screened if isinstance(screened, Rejection) \
            else self.judge(screened, clock_trusted)

    def screen(self, payload: bytes) -> Command | Rejection:
        """The checks that need no clock; writes nothing."""
        limit = self._limits.max_payload_bytes
        if len(payload) > limit:
            return Rejection("too_large", f"payload of {len(payload)} bytes is over the "
                             f"limit of {limit}", _id_by_pattern(payload))
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            # A truncated or mistyped command may still show its id: the sender then gets
            # a rejection instead of silence.
            return Rejection("bad_json", f"not JSON: {exc}", _id_by_pattern(payload))
        command_id = _usable_id(doc)
        if command_id is None:
            return Rejection("bad_json", "not a JSON object with a string id "
                             f"of 1–{_MAX_ID_CHARS} printable characters", None)
        if self._key is not None and not verify(doc, self._key):
            reason = "missing" if "signature" not in doc else "malformed or wrong"
            return Rejection("bad_signature", f"signature {reason}", command_id,
                             _type_of(doc))
        command_type = doc.get("type")
        if not isinstance(command_type, str) or command_type not in _ALLOWED_KEYS:
            return Rejection("unknown_type", f"unknown command type {command_type!r}",
                             command_id)
        if command_type == "update" and self._key is None:
            return Rejection("bad_signature", "update commands must be signed: "
                             "mqtt.command_public_key is not set", command_id, command_type)
        try:
            args = validate_args(command_type, doc.get("args", {}))
            _required(doc, "issued_at")
            issued_at = _timestamp(doc, "issued_at")
            expires_at = None if doc.get("expires_at") is None \
                else _timestamp(doc, "expires_at")
        except BadArgs as exc:
            return Rejection("bad_args", str(exc), command_id, command_type)
        wrong = self._wrong_target(doc.get("to"))
        if wrong is not None:
            return Rejection("wrong_target", wrong, command_id, command_type)
        return Command(command_id, command_type, args, issued_at, expires_at)

    def _wrong_target(self, to: object) -> str | None:
        if to is None:
            return None if self._key is None else \
                "'to' is required when command_public_key is set"
        if not isinstance(to, str) or to not in self._audiences:
            shown = repr(to)[:140]
            return f"addressed to {shown}, this is {self._device_id!r} " \
                   f"(or {', '.join(sorted(self._audiences - {self._device_id})) or 'no group'})"
        return None

    def judge(self, command: Command, clock_trusted: bool) -> Command | Rejection:
        """The checks that need the clock, then replay. ``clock_trusted`` False: a type
        that needs the clock is rejected ``clock_unsynced``; the others skip the times."""
        verdict = self._judged(command, clock_trusted)
        if self._key is None and isinstance(verdict, Rejection):
            return verdict
        self._prune()
        if not self._store.remember_command(command.id, command.issued_at):
            return Rejection("replay", "command id already seen", command.id, command.type)
        return verdict

    def _judged(self, command: Command, clock_trusted: bool) -> Command | Rejection:
        def no(code: str, message: str) -> Rejection:
            return Rejection(code, message, command.id, command.type)

        if clock_trusted:
            now = self._clock.now()
            limits = self._limits
            if command.issued_at - now > limits.max_skew_s:
                return no("clock_skew", f"issued {command.issued_at - now:.0f} s in the future, "
                          f"more than max_clock_skew_s {limits.max_skew_s:g}")
            if command.expires_at is not None and command.expires_at <= now:
                return no("expired", f"expired {now - command.expires_at:.0f} s ago")
            if now - command.issued_at > limits.max_age_s:
                return no("too_old", f"issued {now - command.issued_at:.0f} s ago, more than "
                          f"max_command_age_s {limits.max_age_s:g}")
        elif command.type not in CLOCK_FREE_TYPES:
            return no("clock_unsynced", "the device clock is not trusted; the command "
                      "cannot be judged on it")
        media_id = command.args.get("media_id")
        if media_id is not None and "url" not in command.args \
                and not self._media_known(media_id):
            return no("media_not_cached", f"media {media_id!r} is not cached and the "
                      "command carries no url")
        return command

    def _prune(self) -> None:
        mono = self._clock.monotonic()
        if self._last_prune is not None and mono - self._last_prune < _PRUNE_INTERVAL_S:
            return
        self._last_prune = mono
        self._store.forget_commands_before(self._clock.now() - self._limits.max_age_s
                                           - REPLAY_GRACE_S)


def _type_of(doc: dict[str, Any]) -> str | None:
    value = doc.get("type")
    return value if isinstance(value, str) and value in _ALLOWED_KEYS else None


def _id_by_pattern(payload: bytes) -> str | None:
    """The ``id`` a payload that cannot be parsed seems to carry, found by pattern in its
    first 4 KiB, for its Ack."""
    found = _BROKEN_ID.search(payload[:4096].decode("utf-8", errors="replace"))
    return found[1] if found else None
