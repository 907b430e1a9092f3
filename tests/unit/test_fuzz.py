"""Fuzzing (hypothesis) of what hostile input reaches: the schedule parser, the command
validator, the config loader and the health endpoint's request parser. Hypothesis draws
a document near a valid one (or anything); each example then checks it and ``MUTANTS - 1``
byte-level mutations of it (cheaper to make than to draw): in all, more than 100,000
inputs per run. Only the documented errors may come out, never another exception."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.loader import ConfigError, load_config
from agent.core.clock import ManualClock
from agent.core.schedule_parser import ScheduleError, parse_schedule
from agent.http.health import _Reply, parse_request
from agent.mqtt.commands import Command, CommandLimits, CommandValidator, Rejection
from agent.state.store import StateStore

MUTANTS = 50
_TOKENS = (b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\x00", b"\xff", b"1e999",
           b"-1", b"null", b"[[[[[[[[", b"\r\n", b"\n  - ", b": &a *a", b"!!python/object")


def mutants(data: bytes, seed: int) -> Iterator[bytes]:
    """``data``, then ``MUTANTS - 1`` mutations: cut, flipped bytes, inserted tokens."""
    rng = random.Random(seed)
    yield data
    for _ in range(MUTANTS - 1):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(mutant))
            action = rng.randrange(3)
            if action == 0:
                del mutant[at:]
            elif action == 1 and at < len(mutant):
                mutant[at] = rng.randrange(256)
            else:
                mutant[at:at] = rng.choice(_TOKENS)
        yield bytes(mutant)
FUZZ = settings(deadline=5_000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) \
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=6)


def near(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with some fields replaced by anything, some removed."""
    return st.fixed_dictionaries({}, optional={
        key: (value if isinstance(value, st.SearchStrategy) else st.just(value)) | json_values
        for key, value in valid.items()})


# --- schedule parser ------------------------------------------------------------------------

PROGRAM = {"id": "p-1", "priority": "scheduled", "source": {"type": "media", "items": ["m-1"]},
           "start": "06:00:00", "days": ["mon"], "valid_from": "2026-11-01", "duration_s": 60,
           "repeat": 2, "volume": 80, "dates": ["2026-11-24"]}
MEDIA = {"id": "m-1", "url": "/api/v1/media/m-1", "sha256": "a" * 64, "size": 10,
         "duration_s": 1.0}
schedules = st.fixed_dictionaries(
    {"version": st.just(1) | json_values},
    optional={"timezone": st.sampled_from(["Asia/Ho_Chi_Minh", "Nowhere/City"]) | json_values,
              "media": st.lists(near(MEDIA) | json_values, max_size=3) | json_values,
              "programs": st.lists(near(PROGRAM) | near({**PROGRAM, "source": near(
                  {"type": "stream", "url": "https://x/y"})}) | json_values, max_size=3),
              "fm_fallback": near({"frequency_mhz": 100.0}) | json_values}) | json_values


@settings(FUZZ, max_examples=1_000)
@given(schedules, st.integers(0, 2**32))
def test_schedule_parser(drawn: Any, seed: int) -> None:
    for body in mutants(json.dumps(drawn).encode(), seed):
        try:
            doc = json.loads(body)
        except ValueError:  # the client refuses it before the parser (source_bad_response)
            continue
        try:
            parsed = parse_schedule(doc, "UTC")
        except ScheduleError:
            continue
        assert all(isinstance(message, str) for _, message in parsed.problems)


# --- command validator ----------------------------------------------------------------------

COMMAND = {"id": "c-1", "type": "emergency", "args": {"text": "a", "repeat": 2}, "to": "d1",
           "issued_at": "2026-11-23T08:15:00+07:00", "expires_at": "2026-11-23T08:20:00+07:00",
           "signature": "ed25519:AAAA"}
ARGS = {"media_id": "m", "url": "https://x/y", "text": "t", "repeat": 1, "volume": 50,
        "priority": "live", "frequency_mhz": 100.0, "duration_s": 5, "on": True}
commands = near({**COMMAND, "type": st.sampled_from(
    ["emergency", "play_now", "stop", "set_volume", "fm_relay", "sync_now", "amplifier"])})


def command_payloads() -> st.SearchStrategy[bytes]:
    docs = st.builds(lambda doc, args: {**doc, "args": args}, commands, near(ARGS) | json_values)
    as_json = docs.map(lambda d: json.dumps(d, default=str).encode())
    return as_json | st.binary(max_size=300) | json_values.map(
        lambda v: json.dumps(v).encode())


@pytest.fixture(scope="module")
def validator() -> Iterator[CommandValidator]:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        store = StateStore(Path(directory) / "agent.db")
        # No key: the deepest path (a signed command would stop at the signature).
        yield CommandValidator(None, CommandLimits(max_payload_bytes=2_048), store,
                               ManualClock(start=1_795_000_000.0), lambda m: m == "m",
                               device_id="d1", groups=("g",))
        store.close()


@settings(FUZZ, max_examples=600)
@given(command_payloads(), st.integers(0, 2**32), st.booleans())
def test_command_validator(validator: CommandValidator, drawn: bytes, seed: int,
                           trusted: bool) -> None:
    for payload in mutants(drawn, seed):
        verdict = validator.check(payload, clock_trusted=trusted)
        assert isinstance(verdict, Command | Rejection)
        if isinstance(verdict, Rejection):
            assert verdict.reason.startswith(verdict.code + ": ")


# --- config loader --------------------------------------------------------------------------

yaml_texts = st.lists(st.sampled_from([*"abd_ :-\n\t[]{},\"'#&*!|>%@`0123456789.", "device_id",
                                       "source", "url", "mqtt", "http://h", "  ", "\n  "]),
                      max_size=40).map("".join)
configs = st.builds(lambda doc: yaml.safe_dump(doc), near(
    {"device_id": "d1", "source": {"url": "http://h/api", "token": "t"},
     "mqtt": {"brokers": ["mqtt://h"], "max_clock_skew_s": 1}, "clock": {"trusted_by": ["ntp"]},
     "groups": ["g"], "audio": {"rate": 48000}})) | yaml_texts


@settings(FUZZ, max_examples=300)
@given(configs, st.integers(0, 2**32))
def test_config_loader(drawn: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        path = Path(directory) / "agent.yaml"
        for content in mutants(drawn.encode(), seed):
            path.write_bytes(content)
            try:
                load_config(path)
            except ConfigError as exc:
                assert exc.errors and all(line.startswith(str(path)) for line in exc.errors)


# --- health request parser ------------------------------------------------------------------

heads = st.binary(max_size=200).map(lambda b: b + b"\r\n\r\n") | st.builds(
    lambda method, target, headers: f"{method} {target} HTTP/1.1\r\n{headers}\r\n\r\n".encode(
        "latin-1", errors="replace"),
    st.text(max_size=8), st.text(max_size=20), st.text(max_size=60))


@settings(FUZZ, max_examples=1_000)
@given(heads, st.integers(0, 2**32))
def test_health_request_parser(drawn: bytes, seed: int) -> None:
    for head in mutants(drawn, seed):
        try:
            method, _target, headers = parse_request(head)
        except _Reply as reply:
            assert reply.status == 400
            continue
        assert " " not in method and all(name == name.lower() for name in headers)
