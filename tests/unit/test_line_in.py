"""The line input: the VOX and level deciders (property-tested), the virtual capture card
of hil.md (driven by a manual clock), the line-in thread's leases and its supervision."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.loader import ConfigError, load_config
from agent.control.vox import FLOOR_DBFS, LevelEnvelope, Vox, block_dbfs, block_rms
from agent.core.clock import ManualClock, SystemClock
from agent.core.faults import FaultRegistry
from agent.playout.line_in import LineInput
from drivers.capture import BACKENDS, CaptureError, open_capture
from drivers.capture.wav import WavCapture
from tests.support import media
from tests.support.agentproc import wait_for

RATE = 48_000
BLOCK = 240  # frames: the wav backend's 5 ms blocks
BLOCK_S = BLOCK / RATE


# --- VOX -------------------------------------------------------------------------------------

def run_vox(vox: Vox, levels: list[float]) -> list[tuple[int, bool]]:
    """Feed one level per block; (index of the block that ended with a change, new state)."""
    changes = []
    for i, level in enumerate(levels):
        change = vox.update(i * BLOCK_S, BLOCK_S, level)
        if change is not None:
            changes.append((i, change))
    return changes


def run_before(levels: list[float], end: int, threshold: float, loud: bool) -> float:
    """Seconds of blocks up to and including ``end`` on the ``loud`` side of the threshold."""
    count = 0
    for level in reversed(levels[:end + 1]):
        if (level > threshold) != loud:
            break
        count += 1
    return count * BLOCK_S


levels_strategy = st.lists(st.sampled_from([-80.0, -45.0, -30.0, -29.9, -12.0]),
                           max_size=400)


@settings(max_examples=300, deadline=None)
@given(levels=levels_strategy,
       on_blocks=st.integers(0, 40), off_blocks=st.integers(0, 60))
def test_vox_switches_exactly_when_the_level_stayed_on_one_side_long_enough(
        levels: list[float], on_blocks: int, off_blocks: int) -> None:
    on_after, off_after = on_blocks * BLOCK_S, off_blocks * BLOCK_S
    vox = Vox(-30.0, on_after, off_after)
    changes = run_vox(vox, levels)
    # Changes alternate, starting with on.
    assert [state for _, state in changes] == [k % 2 == 0 for k in range(len(changes))]
    state = False
    changed_at = dict(changes)
    for i, level in enumerate(levels):
        if i in changed_at:
            state = changed_at[i]
            # Safety: it switched only after a long enough run on the new side...
            needed = on_after if state else off_after
            assert run_before(levels, i, -30.0, state) >= needed - 1e-9
        else:
            # ...and liveness: it never stayed on the old side past such a run.
            needed = off_after if state else on_after
            assert run_before(levels, i, -30.0, not state) < needed - 1e-9 \
                or (level > -30.0) == state
    assert vox.on == state


def test_vox_at_the_threshold_counts_as_quiet_and_reset_turns_it_off() -> None:
    vox = Vox(-30.0, on_after_s=0.0, off_after_s=1.0)
    assert vox.update(0.0, BLOCK_S, -30.0) is None
    assert vox.update(BLOCK_S, BLOCK_S, -29.0) is True
    assert vox.reset() is True and not vox.on
    assert vox.reset() is False


def test_the_envelope_attacks_at_once_and_releases_at_its_rate() -> None:
    envelope = LevelEnvelope(release_db_per_s=60.0)
    assert envelope.update(-20.0, 0.005) == -20.0
    assert envelope.update(FLOOR_DBFS, 0.1) == pytest.approx(-26.0)
    assert envelope.update(-10.0, 0.005) == -10.0
    assert envelope.update(FLOOR_DBFS, 10.0) == FLOOR_DBFS


def test_block_level_of_silence_and_of_a_full_scale_sine() -> None:
    assert block_dbfs(b"") == FLOOR_DBFS
    assert block_dbfs(bytes(960)) == FLOOR_DBFS
    sine = (32767 * np.sin(2 * np.pi * 1000 * np.arange(4800) / RATE)).astype("<i2")
    assert block_dbfs(np.repeat(sine, 2).tobytes()) == pytest.approx(-3.01, abs=0.05)


def test_block_rms_reads_little_endian_samples_and_ignores_a_trailing_odd_byte() -> None:
    square = np.tile(np.array([1000, -1000, 3000, -3000], "<i2"), 240)
    assert block_rms(square.tobytes() + b"\x7f") == pytest.approx(math.sqrt(5_000_000))
    noise = np.random.default_rng(10).integers(-32768, 32767, 1920).astype("<i2")
    assert block_rms(noise.tobytes()) == pytest.approx(
        math.sqrt(np.mean(noise.astype(np.float64) ** 2)), rel=1e-12)
    assert block_rms(b"\x01") == 0.0


# --- the virtual capture card ----------------------------------------------------------------

def test_the_wav_card_captures_in_real_time_then_silence_and_writes_its_sidecar(
        tmp_path: Path) -> None:
    mono = np.arange(1, 1001, dtype=np.int16).reshape(-1, 1)
    path = media.write_frames(tmp_path / "in.wav", mono)
    clock = ManualClock()
    capture = WavCapture(path, RATE, clock)
    capture.open()
    sidecar = json.loads((tmp_path / "in.wav.json").read_text())
    assert sidecar == {"start_epoch": clock.now(), "rate": RATE, "channels": 2,
                       "format": "s16le"}
    assert capture.read(0.0) == b""  # nothing captured yet
    clock.advance(0.012)  # 576 frames due: two whole blocks
    first = np.frombuffer(capture.read(0.0), dtype="<i2").reshape(-1, 2)
    assert first.shape == (2 * BLOCK, 2)
    assert (first[:, 0] == first[:, 1]).all() and list(first[:3, 0]) == [1, 2, 3]
    clock.advance(0.1)
    rest = np.frombuffer(capture.read(0.0), dtype="<i2").reshape(-1, 2)
    assert rest.shape[0] % BLOCK == 0 and rest[0, 0] == 2 * BLOCK + 1
    assert rest[1000 - 2 * BLOCK - 1, 0] == 1000 and not rest[1000 - 2 * BLOCK:].any()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing.wav", "cannot read the input"),
    (lambda p: media.write_frames(p / "slow.wav", np.zeros((10, 1), dtype=np.int16),
                                 rate=44_100),
     "expected 16-bit mono or stereo at 48000 Hz, got 16-bit, 1 channels at 44100 Hz"),
])
def test_an_unusable_wav_input_is_a_capture_error_naming_it(
        tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    capture = WavCapture(make(tmp_path), RATE, ManualClock())
    with pytest.raises(CaptureError, match=message):
        capture.open()


def test_the_line_input_is_chosen_by_its_config_string(tmp_path: Path) -> None:
    assert set(BACKENDS) == {"alsa", "wav"}
    assert isinstance(open_capture(f"wav:{tmp_path / 'in.wav'}", RATE), WavCapture)
    with pytest.raises(ValueError, match="unknown line input 'usb:1'; expected one of "
                                         "alsa:<pcm name>, wav:<path>"):
        open_capture("usb:1", RATE)
    with pytest.raises(ValueError, match="needs a path"):
        open_capture("wav:", RATE)


@pytest.mark.parametrize("value", ["usb:mic", "wav:", "alsa", 3])
def test_a_bad_line_in_input_is_a_config_error_naming_the_key(tmp_path: Path,
                                                              value: object) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"device_id": "d-1", "source": {"url": "https://s.vn/api"},
                                  "line_in": {"input": value}}))
    with pytest.raises(ConfigError) as error:
        load_config(config)
    [line] = error.value.errors
    assert line.startswith(f"{config}:1: line_in.input: expected alsa:<pcm name>, wav:<path> "
                           "or null, got ")


def test_line_in_paths_are_taken_from_the_config_directory(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"device_id": "d-1", "source": {"url": "https://s.vn/api"},
                                  "line_in": {"input": "wav:mic.wav", "vox": True}}))
    loaded = load_config(config).line_in
    assert (loaded.input, loaded.vox, loaded.priority) == (f"wav:{tmp_path / 'mic.wav'}",
                                                           True, "live")


# --- the line-in thread ----------------------------------------------------------------------


def tone(seconds: float, level_dbfs: float) -> np.ndarray:
    n = round(seconds * RATE)
    amplitude = 32768 * 10 ** (level_dbfs / 20) * math.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).reshape(-1, 1)


def test_a_missing_input_raises_line_in_failed_and_is_retried_until_it_appears(
        tmp_path: Path) -> None:
    faults = FaultRegistry(time.time)
    path = tmp_path / "later.wav"
    line = LineInput(lambda: WavCapture(path, RATE), faults, SystemClock(),
                     dead_air_dbfs=-50.0, vox=None, on_vox=lambda on: None,
                     backoff_initial_s=0.05, backoff_max_s=0.05)
    line.start()
    try:
        wait_for(lambda: faults.is_raised("line_in_failed"), 10)
        [fault] = faults.active()
        assert "later.wav: cannot read the input" in fault.message
        assert line.status() == {"level_dbfs": None}
        media.write_frames(path, tone(0.5, -20.0))
        wait_for(lambda: not faults.is_raised("line_in_failed"), 10)
        wait_for(lambda: (line.status()["level_dbfs"] or FLOOR_DBFS) > -25.0, 10)
    finally:
        line.stop()


def test_vox_and_the_lease_follow_the_captured_sound(tmp_path: Path) -> None:
    path = media.write_frames(tmp_path / "mic.wav", np.concatenate(
        [np.zeros((RATE // 5, 1)), tone(0.4, -20.0)]))
    changes: list[bool] = []
    line = LineInput(lambda: WavCapture(path, RATE), FaultRegistry(time.time), SystemClock(),
                     dead_air_dbfs=-50.0, vox=Vox(-30.0, 0.1, 0.2), on_vox=changes.append)
    lease = line.acquire()
    line.start()
    try:
        relayed = bytearray()
        while len(changes) < 2 and len(relayed) < RATE * 4 * 5:
            relayed += lease.read(960 * 4)
            time.sleep(0.02)
        assert changes == [True, False]
        assert lease.relayed_frames > 0 and lease.carried_sound
        assert np.abs(np.frombuffer(bytes(relayed), dtype="<i2")).max() > 3000
        newer = line.acquire()
        assert not lease.current and lease.read(3840) == b"" and newer.current
        newer.end()
        assert newer.finished and newer.read(3840) == b""
        newer.release()
        assert line.owner is None
    finally:
        line.stop()


def test_blocks_captured_on_air_wake_the_feeder_and_only_then(tmp_path: Path) -> None:
    """Each block captured while a lease owns the input calls ``on_captured`` (the playout
    feeder passes it on at once); with nobody on air, capture goes on without waking it."""
    path = media.write_frames(tmp_path / "mic.wav", tone(5.0, -20.0))
    wakes: list[float] = []
    line = LineInput(lambda: WavCapture(path, RATE), FaultRegistry(time.time), SystemClock(),
                     dead_air_dbfs=-50.0, vox=None, on_vox=lambda on: None,
                     on_captured=lambda: wakes.append(time.monotonic()))
    line.start()
    try:
        wait_for(lambda: line.status()["level_dbfs"] is not None, 10)
        time.sleep(0.2)
        assert wakes == []
        lease = line.acquire()
        wait_for(lambda: len(wakes) >= 20, 10)
        assert lease.drain(RATE * 4)
        lease.release()
        time.sleep(0.05)  # a block being captured at the release may still wake it
        after_release = len(wakes)
        time.sleep(0.2)
        assert len(wakes) == after_release
    finally:
        line.stop()
