import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from agent.core.clock import ManualClock
from agent.core.signing import public_key_of, sign
from agent.mqtt.commands import (
    REPLAY_GRACE_S,
    BadArgs,
    Command,
    CommandLimits,
    CommandValidator,
    Rejection,
    validate_args,
)
from agent.state.store import StateStore

ABSENT = object()
KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = public_key_of(KEY)
MAX_AGE = 300.0


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


DEVICE = "xa-1"
LIMITS = CommandLimits(max_age_s=MAX_AGE, max_skew_s=120.0, max_payload_bytes=65_536)


def make_validator(store: StateStore, clock: ManualClock,
                   key: VerifyKey | None = PUBLIC_KEY,
                   media_known: Callable[[str], bool] | None = None) -> CommandValidator:
    return CommandValidator(key, LIMITS, store, clock,
                            media_known or (lambda media_id: media_id == "m-cached"),
                            device_id=DEVICE, groups=("huyen-a",))


def command(clock: ManualClock, type_: str = "emergency", args: object = None,
            signed: bool = True, **fields: object) -> bytes:
    doc = {"id": fields.pop("id", "c-1"), "type": type_,
           "args": {"media_id": "m-cached"} if args is None else args, "to": DEVICE,
           "issued_at": stamp(clock.now()), "expires_at": stamp(clock.now() + 60), **fields}
    doc = {k: v for k, v in doc.items() if v is not ABSENT}
    if signed:
        doc["signature"] = sign(doc, KEY)
    return json.dumps(doc).encode()


def rejected(verdict: Command | Rejection, code: str) -> Rejection:
    assert isinstance(verdict, Rejection), verdict
    assert verdict.code == code, verdict.reason
    assert verdict.reason.startswith(f"{code}: ")
    return verdict


def test_accepts_a_valid_signed_command_with_defaults(store: StateStore,
                                                      clock: ManualClock) -> None:
    verdict = make_validator(store, clock).check(command(clock))
    assert isinstance(verdict, Command)
    assert verdict.args == {"media_id": "m-cached", "repeat": 1}
    assert verdict.issued_at == clock.now()
    assert verdict.expires_at == clock.now() + 60


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b"[1,2]", b'{"type": "stop"}',
                                     b'{"id": 5}', b'{"id": ""}', b"[" * 60_000])
def test_payloads_without_a_usable_id_cannot_be_acked(store: StateStore, clock: ManualClock,
                                                      payload: bytes) -> None:
    verdict = rejected(make_validator(store, clock).check(payload), "bad_json")
    assert verdict.command_id is None


def test_broken_json_that_shows_its_id_is_rejected_to_its_sender(store: StateStore,
                                                                 clock: ManualClock) -> None:
    payload = b'{"id": "c-broken", "type": "stop", "args": '
    verdict = rejected(make_validator(store, clock).check(payload), "bad_json")
    assert verdict.command_id == "c-broken"


def test_too_large_is_rejected_before_anything_else(store: StateStore, clock: ManualClock) -> None:
    padding = {"media_id": "m-cached", "volume": 50}
    big = json.dumps({"id": "c-big", "type": "emergency", "args": padding,
                      "pad": "x" * 70_000}).encode()
    verdict = rejected(make_validator(store, clock).check(big), "too_large")
    assert verdict.command_id == "c-big"
    assert rejected(make_validator(store, clock).check(b"x" * 70_000),
                    "too_large").command_id is None


@pytest.mark.parametrize("mutate", ["missing", "wrong_key", "tampered"])
def test_bad_signature(store: StateStore, clock: ManualClock, mutate: str) -> None:
    if mutate == "missing":
        payload = command(clock, signed=False)
    elif mutate == "wrong_key":
        doc = json.loads(command(clock, signed=False))
        doc["signature"] = sign(doc, Ed25519PrivateKey.generate())
        payload = json.dumps(doc).encode()
    else:
        doc = json.loads(command(clock))
        doc["args"]["repeat"] = 100
        payload = json.dumps(doc).encode()
    verdict = rejected(make_validator(store, clock).check(payload), "bad_signature")
    assert verdict.command_id == "c-1"


def test_unsigned_commands_pass_when_no_key_is_configured(store: StateStore,
                                                          clock: ManualClock) -> None:
    verdict = make_validator(store, clock, key=None).check(command(clock, signed=False))
    assert isinstance(verdict, Command)


def test_unknown_type(store: StateStore, clock: ManualClock) -> None:
    rejected(make_validator(store, clock).check(command(clock, "reboot", {})), "unknown_type")


@pytest.mark.parametrize(("type_", "args", "message"), [
    ("emergency", {}, "one of media_id, url or text"),
    ("emergency", {"text": "a", "url": "https://x.vn/a.mp3"}, "text cannot be combined"),
    ("emergency", {"text": "a", "repeat": 0}, "repeat must be an integer 1–100"),
    ("emergency", {"text": "a", "repeat": 101}, "repeat"),
    ("emergency", {"text": "a", "volume": 101}, "volume"),
    ("emergency", {"text": "a", "volume": True}, "volume"),
    ("emergency", {"text": "  "}, "text must be a non-empty string"),
    ("emergency", {"url": "ftp://x.vn/a.mp3"}, "absolute http(s) URL"),
    ("emergency", {"text": "a", "colour": "red"}, "unknown argument(s) for emergency: colour"),
    ("play_now", {"text": "a"}, "unknown argument"),
    ("play_now", {}, "one of media_id or url"),
    ("play_now", {"media_id": "m-cached", "priority": "scheduled"}, "priority must be one of"),
    ("stop", {"priority": "loud"}, "priority"),
    ("set_volume", {}, "missing volume"),
    ("set_volume", {"volume": -1}, "volume"),
    ("set_volume", {"volume": 50.5}, "volume"),
    ("fm_relay", {"frequency_mhz": 75.9, "duration_s": 60},
     "frequency_mhz must be within 54–68 MHz or 76–108 MHz, got 75.9"),
    ("fm_relay", {"frequency_mhz": 108.1, "duration_s": 60}, "frequency_mhz"),
    ("fm_relay", {"frequency_mhz": 53.9, "duration_s": 60}, "frequency_mhz"),
    ("fm_relay", {"frequency_mhz": 70.0, "duration_s": 60}, "frequency_mhz"),
    ("fm_relay", {"frequency_mhz": 100, "duration_s": 60, "priority": "scheduled"},
     "priority must be one of priority, live, emergency"),
    ("fm_relay", {"frequency_mhz": 100, "duration_s": 0}, "duration_s must be > 0"),
    ("fm_relay", {"frequency_mhz": "100", "duration_s": 5}, "frequency_mhz must be a number"),
    ("fm_relay", {"duration_s": 5}, "missing frequency_mhz"),
    ("line_in", {}, "missing duration_s"),
    ("line_in", {"duration_s": -1}, "duration_s must be > 0"),
    ("line_in", {"duration_s": 86_401}, "at most 86400"),
    ("line_in", {"duration_s": 60, "priority": "scheduled"},
     "priority must be one of priority, live, emergency"),
    ("line_in", {"duration_s": 60, "volume": 101}, "volume"),
    ("line_in", {"duration_s": 60, "frequency_mhz": 100}, "unknown argument(s) for line_in"),
    ("amplifier", {"on": "yes"}, "on must be true or false"),
    ("sync_now", {"now": True}, "unknown argument"),
    ("sync_now", [], "args must be an object"),
])
def test_bad_args(store: StateStore, clock: ManualClock, type_: str, args: object,
                  message: str) -> None:
    verdict = rejected(make_validator(store, clock).check(command(clock, type_, args)),
                       "bad_args")
    assert message in verdict.message
    with pytest.raises(BadArgs):
        validate_args(type_, args)


@pytest.mark.parametrize(("type_", "args", "expected"), [
    ("emergency", {"text": "Bão", "repeat": 3, "volume": 90},
     {"text": "Bão", "repeat": 3, "volume": 90}),
    ("emergency", {"media_id": "m-new", "url": "https://x.vn/m.mp3"},
     {"media_id": "m-new", "url": "https://x.vn/m.mp3", "repeat": 1}),
    ("play_now", {"url": "http://x.vn/live"}, {"url": "http://x.vn/live", "priority": "live"}),
    ("stop", {}, {}),
    ("stop", {"priority": "scheduled"}, {"priority": "scheduled"}),
    ("set_volume", {"volume": 0}, {"volume": 0}),
    ("fm_relay", {"frequency_mhz": 76, "duration_s": 0.5, "priority": "emergency"},
     {"frequency_mhz": 76.0, "duration_s": 0.5, "priority": "emergency"}),
    ("fm_relay", {"frequency_mhz": 54, "duration_s": 60, "priority": "priority"},
     {"frequency_mhz": 54.0, "duration_s": 60.0, "priority": "priority"}),
    ("fm_relay", {"frequency_mhz": 68.0, "duration_s": 60},
     {"frequency_mhz": 68.0, "duration_s": 60.0, "priority": "live"}),
    ("line_in", {"duration_s": 30}, {"duration_s": 30.0, "priority": "live"}),
    ("line_in", {"duration_s": 5, "priority": "emergency", "volume": 80},
     {"duration_s": 5.0, "priority": "emergency", "volume": 80}),
    ("play_now", {"media_id": "m-cached", "priority": "priority"},
     {"media_id": "m-cached", "priority": "priority"}),
    ("stop", {"priority": "priority"}, {"priority": "priority"}),
    ("sync_now", {}, {}),
    ("amplifier", {"on": False}, {"on": False}),
])
def test_valid_args(type_: str, args: dict[str, Any], expected: dict[str, Any]) -> None:
    assert validate_args(type_, args) == expected


def test_bad_times(store: StateStore, clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    rejected(validator.check(command(clock, id="c-a", issued_at="yesterday")), "bad_args")
    rejected(validator.check(command(clock, id="c-b", issued_at="2026-11-23T08:15:00")),
             "bad_args")
    rejected(validator.check(command(clock, id="c-c", expires_at=stamp(clock.now() - 1))),
             "expired")
    rejected(validator.check(command(clock, id="c-d", issued_at=stamp(clock.now() - 301))),
             "too_old")
    no_expiry = validator.check(command(clock, id="c-e", expires_at=None))
    assert isinstance(no_expiry, Command) and no_expiry.expires_at is None


def test_media_must_be_cached_unless_a_url_comes_with_it(store: StateStore,
                                                         clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    rejected(validator.check(command(clock, "play_now", {"media_id": "m-x"}, id="c-a")),
             "media_not_cached")
    with_url = validator.check(command(clock, "play_now",
                                       {"media_id": "m-x", "url": "https://x.vn/x.mp3"},
                                       id="c-b"))
    assert isinstance(with_url, Command)


def test_replay_is_rejected_across_restarts(tmp_path: Path, clock: ManualClock) -> None:
    first = StateStore(tmp_path / "state.db")
    payload = command(clock)
    assert isinstance(make_validator(first, clock).check(payload), Command)
    first.close()
    reopened = StateStore(tmp_path / "state.db")
    rejected(make_validator(reopened, clock).check(payload), "replay")
    reopened.close()


def test_a_command_first_rejected_for_a_passing_reason_stays_single_use(store: StateStore,
                                                                        clock: ManualClock) -> None:
    cached: set[str] = set()
    validator = make_validator(store, clock, media_known=cached.__contains__)
    payload = command(clock, "play_now", {"media_id": "m-late"})
    rejected(validator.check(payload), "media_not_cached")
    cached.add("m-late")
    rejected(validator.check(payload), "replay")


def test_a_forged_copy_does_not_burn_the_genuine_id(store: StateStore, clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    forged = json.loads(command(clock, signed=False))
    forged["signature"] = sign(forged, Ed25519PrivateKey.generate())
    rejected(validator.check(json.dumps(forged).encode()), "bad_signature")
    assert isinstance(validator.check(command(clock)), Command)


def test_seen_ids_are_forgotten_only_when_too_old_anyway(store: StateStore,
                                                         clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    payload = command(clock, expires_at=None)
    assert isinstance(validator.check(payload), Command)
    clock.advance(MAX_AGE + REPLAY_GRACE_S + 3_601)
    validator.check(command(clock, id="c-other"))  # triggers the hourly pruning
    # c-1 was forgotten (else this would be a replay), and the old copy is still refused
    rejected(validator.check(payload), "too_old")


# --- audience, clock ------------------------------------------------------------------------

@pytest.mark.parametrize("to", [DEVICE, "group:huyen-a"])
def test_a_command_for_this_device_or_its_group_is_accepted(store: StateStore, clock: ManualClock,
                                                            to: str) -> None:
    assert isinstance(make_validator(store, clock).check(command(clock, to=to)), Command)


@pytest.mark.parametrize("to", ["xa-2", "group:huyen-b", "huyen-a", ["xa-1"], ABSENT])
def test_a_command_for_another_audience_is_rejected_wrong_target(store: StateStore,
                                                                 clock: ManualClock,
                                                                 to: object) -> None:
    verdict = rejected(make_validator(store, clock).check(command(clock, to=to)),
                       "wrong_target")
    assert verdict.command_id == "c-1"


def test_the_audience_is_covered_by_the_signature(store: StateStore, clock: ManualClock) -> None:
    doc = json.loads(command(clock, to="xa-2"))
    doc["to"] = DEVICE  # re-addressed without re-signing
    rejected(make_validator(store, clock).check(json.dumps(doc).encode()), "bad_signature")


def test_without_a_key_to_is_optional_but_checked_when_present(store: StateStore,
                                                               clock: ManualClock) -> None:
    validator = make_validator(store, clock, key=None)
    assert isinstance(validator.check(command(clock, signed=False, to=ABSENT)), Command)
    rejected(validator.check(command(clock, signed=False, id="c-2", to="xa-2")),
             "wrong_target")


def test_a_command_from_the_future_is_rejected_clock_skew(store: StateStore,
                                                          clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    rejected(validator.check(command(clock, issued_at=stamp(clock.now() + 121),
                                     expires_at=stamp(clock.now() + 600))), "clock_skew")
    assert isinstance(validator.check(command(clock, id="c-2",
                                              issued_at=stamp(clock.now() + 119))), Command)


def test_on_an_untrusted_clock_only_stop_volume_and_amplifier_are_judged(
        store: StateStore, clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    hours_ahead: dict[str, Any] = {"issued_at": stamp(clock.now() + 6 * 3600),
                                   "expires_at": stamp(clock.now() + 6 * 3600 + 60)}
    rejected(validator.check(command(clock, **hours_ahead), clock_trusted=False),
             "clock_unsynced")
    for i, (type_, args) in enumerate([("stop", {}), ("set_volume", {"volume": 10}),
                                       ("amplifier", {"on": False})]):
        verdict = validator.check(command(clock, type_, args, id=f"c-{i + 10}", **hours_ahead),
                                  clock_trusted=False)
        assert isinstance(verdict, Command), verdict


def test_screen_rejections_write_nothing(store: StateStore, clock: ManualClock) -> None:
    validator = make_validator(store, clock)
    rejected(validator.screen(command(clock, signed=False)), "bad_signature")
    rejected(validator.screen(command(clock, to="xa-2")), "wrong_target")
    assert isinstance(validator.check(command(clock)), Command)  # c-1 was never burnt


def test_too_large_is_never_parsed(store: StateStore, clock: ManualClock) -> None:
    nested = b'{"id": "c-deep", "pad": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    verdict = rejected(make_validator(store, clock).check(nested), "too_large")
    assert verdict.command_id == "c-deep"


# --- update ------------------------------------------------------------------------------

UPDATE_ARGS = {"version": "1.1", "url": "http://updates.invalid/1.1.bundle",
               "sha256": "a" * 64, "size": 600_000}


def test_update_is_refused_without_a_command_public_key(store: StateStore,
                                                        clock: ManualClock) -> None:
    verdict = make_validator(store, clock, key=None).check(
        command(clock, "update", UPDATE_ARGS, signed=False))
    assert rejected(verdict, "bad_signature").reason == (
        "bad_signature: update commands must be signed: mqtt.command_public_key is not set")


def test_a_signed_update_is_accepted_with_its_args(store: StateStore, clock: ManualClock) -> None:
    verdict = make_validator(store, clock).check(command(clock, "update", UPDATE_ARGS))
    assert isinstance(verdict, Command)
    assert verdict.args == UPDATE_ARGS


@pytest.mark.parametrize(("args", "message"), [
    ({**UPDATE_ARGS, "version": "../1.1"}, "version must be a release version"),
    ({**UPDATE_ARGS, "sha256": "A" * 64}, "sha256 must be 64 lowercase"),
    ({**UPDATE_ARGS, "size": 0}, "size must be an integer"),
    ({**UPDATE_ARGS, "url": "file:///etc/passwd"}, "url must be an absolute http"),
    ({k: v for k, v in UPDATE_ARGS.items() if k != "sha256"}, "missing sha256"),
])
def test_bad_update_args(args: dict[str, Any], message: str) -> None:
    with pytest.raises(BadArgs, match=message):
        validate_args("update", args)
