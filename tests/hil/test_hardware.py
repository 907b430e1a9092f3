"""Hardware-in-loop on a real controller (docs/hil.md), and the plumbing behind it.

The tests marked ``hardware`` need the rig of docs/hil.md and ``BROADCAST_HIL=1``; the
others run everywhere and check the recorder, the relay monitor and the skip hook against
real child processes that stand in for ``arecord`` and ``gpiomon``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agent.config.loader import load_config
from drivers.amplifier.gpio import GpioAmplifier
from tests.conftest import AgentFactory, Source, capture_until, program
from tests.support.agentproc import REPO, AgentProcess, base_config, free_port, wait_for
from tests.support.hil import (
    AmplifierMonitor,
    CaptureRecorder,
    HilError,
    HilRig,
    parse_gpiomon_line,
    rig,
    to_wall_time,
)
from tests.support.scripts import write_script
from tests.support.wavfile import read_capture, rms_dbfs, tone_frequency

RATE = 48000
ARECORD = shutil.which("arecord")
START_WITHIN_S = 0.05  # the recorder's start_epoch against the stand-in's true start
RIG_ENV = {"BROADCAST_HIL_PLAYBACK": "plughw:Loopback,0",
           "BROADCAST_HIL_CAPTURE": "hw:Loopback,1",
           "BROADCAST_HIL_AMP_CHIP": "gpiochip0", "BROADCAST_HIL_AMP_LINE": "17"}


def executable(path: Path, body: str) -> str:
    """A Python script at ``path`` run by this interpreter: a real child process."""
    return str(write_script(path, f"#!{sys.executable}\n{body}"))


def ramp(first: int, count: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Frames ``first`` .. ``first + count``: left = index mod 2^15, right = its negative."""
    left = (np.arange(first, first + count) % 32768).astype(np.int16)
    return np.stack([left, -left], axis=1)


# ---- the recorder -------------------------------------------------------------------------

STANDIN_ARECORD = """
import json, os, sys, time
import numpy as np
args = sys.argv[1:]
rate, channels = int(args[args.index("-r") + 1]), int(args[args.index("-c") + 1])
period = int(next(a for a in args if a.startswith("--period-size=")).split("=")[1])
started_wall, started = time.time(), time.monotonic()
with open({log!r}, "w") as log:
    json.dump({{"argv": args, "start_epoch": started_wall}}, log)
frame = 0
while True:  # a sound card: frame n is sampled at start + n / rate, sent once its period is
    time.sleep(max(0.0, started + (frame + period) / rate - time.monotonic()))
    left = (np.arange(frame, frame + period) % 32768).astype("<i2")
    os.write(1, np.stack([left, -left], axis=1).tobytes())
    frame += period
"""


def test_recorder_writes_a_growing_wav_and_sidecar_timed_like_the_card(tmp_path: Path) -> None:
    log = tmp_path / "arecord.json"
    arecord = executable(tmp_path / "arecord", STANDIN_ARECORD.format(log=str(log)))
    capture = tmp_path / "capture.wav"
    recorder = CaptureRecorder("hw:Loopback,1", capture, arecord_path=arecord)
    recorder.start()
    try:
        growing = wait_for(lambda: capture.with_name("capture.wav.json").exists()
                           and read_capture(capture).frames >= RATE, 10, 0.1,
                           "a second of capture")
        assert growing
        time.sleep(0.5)
        header_frames = int.from_bytes(capture.read_bytes()[40:44], "little") // 4
        assert header_frames > 0, "the header is rewritten while recording"
    finally:
        recorder.stop()

    standin = json.loads(log.read_text())
    assert standin["argv"][:12] == ["-q", "-D", "hw:Loopback,1", "-f", "S16_LE", "-r", "48000",
                                    "-c", "2", "-t", "raw", "--period-size=480"]
    result = read_capture(capture)
    assert result.rate == RATE and result.frames == recorder.frames
    np.testing.assert_array_equal(result.samples, ramp(0, result.frames))  # nothing lost
    assert int.from_bytes(capture.read_bytes()[40:44], "little") == result.frames * 4
    sidecar = json.loads(capture.with_name("capture.wav.json").read_text())
    assert sidecar["rate"] == RATE and sidecar["channels"] == 2 and sidecar["format"] == "s16le"
    error_s = result.start_epoch - standin["start_epoch"]
    print(f"start_epoch estimated {error_s * 1000:+.1f} ms from the true start")
    assert abs(error_s) < START_WITHIN_S


def test_recorder_restart_truncates_the_capture(tmp_path: Path) -> None:
    arecord = executable(tmp_path / "arecord",
                         STANDIN_ARECORD.format(log=str(tmp_path / "arecord.json")))
    capture = tmp_path / "capture.wav"
    recorder = CaptureRecorder("hw:0", capture, arecord_path=arecord)
    recorder.start()
    wait_for(lambda: recorder.frames >= RATE, 10, 0.1, "a second of capture")
    recorder.stop()
    first = read_capture(capture)
    recorder.start()
    wait_for(lambda: recorder.frames >= RATE // 10 and capture.stat().st_size > 44, 10, 0.05,
             "a new capture")
    recorder.stop()
    second = read_capture(capture)
    assert second.frames < first.frames and second.start_epoch > first.start_epoch
    np.testing.assert_array_equal(second.samples, ramp(0, second.frames))


@pytest.mark.skipif(ARECORD is None, reason="arecord (alsa-utils) not installed")
def test_real_arecord_accepts_the_command_and_its_bytes_arrive_exactly(tmp_path: Path) -> None:
    """Real arecord through ALSA's file plugin, whose capture reads a known raw file (the
    null slave is not paced, so this checks the command and the bytes, not the timing)."""
    frames = RATE // 2
    infile = tmp_path / "known.raw"
    infile.write_bytes(ramp(1000, frames).astype("<i2").tobytes())
    alsa_conf = tmp_path / "asound.conf"
    alsa_conf.write_text(f'pcm.known {{ type file slave.pcm "null" file "/dev/null" '
                         f'infile "{infile}" format "raw" }}\n')
    # Real arecord with the recorder's exact arguments, told to stop after the known frames.
    wrapper = tmp_path / "arecord"
    write_script(wrapper, f"#!/bin/sh\nALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:{alsa_conf} "
                          f"exec {ARECORD} \"$@\" --samples={frames}\n")
    capture = tmp_path / "capture.wav"
    recorder = CaptureRecorder("known", capture, arecord_path=str(wrapper))
    recorder.start()
    wait_for(lambda: recorder.frames >= frames, 10, 0.05, "the known frames")
    recorder.stop()
    result = read_capture(capture)
    np.testing.assert_array_equal(result.samples, ramp(1000, frames))
    assert recorder.overruns() == []


@pytest.mark.skipif(ARECORD is None, reason="arecord (alsa-utils) not installed")
def test_recorder_on_a_missing_device_fails_with_arecords_message(tmp_path: Path) -> None:
    recorder = CaptureRecorder("no_such_pcm", tmp_path / "capture.wav")
    with pytest.raises(HilError, match=r"recording no_such_pcm exited with 1: .*Unknown PCM"):
        recorder.start()


def test_recorder_without_arecord_says_what_to_install(tmp_path: Path) -> None:
    recorder = CaptureRecorder("hw:0", tmp_path / "capture.wav",
                               arecord_path=str(tmp_path / "no-arecord"))
    with pytest.raises(HilError, match=r"cannot run .*no-arecord.*docs/hil.md"):
        recorder.start()


# ---- the relay monitor --------------------------------------------------------------------

STANDIN_GPIOGET = """
import sys
assert sys.argv[1:] == ["gpiochip1", "5"], sys.argv
print(0)
"""

# gpiomon 1.6 prints with "event: %s offset: %u timestamp: [%8ld.%09ld]" and, on Linux 5.7
# and later, stamps with CLOCK_MONOTONIC.
STANDIN_GPIOMON = """
import json, sys, time
assert sys.argv[1:] == ["-b", "gpiochip1", "5"], sys.argv
emitted = []
for edge in (" RISING EDGE", "FALLING EDGE"):
    time.sleep(0.2)
    stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    emitted.append(time.time())
    print(f"event: {{edge}} offset: 5 timestamp: [{{stamp // 10**9:8d}}.{{stamp % 10**9:09d}}]",
          flush=True)
print("gpiomon: something unexpected", flush=True)
with open({log!r}, "w") as log:
    json.dump(emitted, log)
time.sleep(60)
"""


def test_monitor_logs_the_initial_level_and_each_edge_in_wall_time(tmp_path: Path) -> None:
    emitted_log = tmp_path / "emitted.json"
    monitor = AmplifierMonitor(
        "gpiochip1", 5, tmp_path / "relay.jsonl",
        gpioget_path=executable(tmp_path / "gpioget", STANDIN_GPIOGET),
        gpiomon_path=executable(tmp_path / "gpiomon",
                                STANDIN_GPIOMON.format(log=str(emitted_log))))
    started = time.time()
    monitor.start()
    try:
        wait_for(lambda: len(monitor.transitions()) == 3 and emitted_log.exists()
                 and monitor.unparsed, 10, 0.05, "two edges")
    finally:
        monitor.stop()
    transitions = monitor.transitions()
    assert [t["on"] for t in transitions] == [False, True, False]
    assert transitions[0]["at"] >= started
    for logged, emitted in zip(transitions[1:], json.loads(emitted_log.read_text()),
                               strict=True):
        assert logged["at"] == pytest.approx(emitted, abs=0.05)
    assert monitor.unparsed == ["gpiomon: something unexpected"]


def test_monitor_of_an_active_low_input_inverts_the_edges(tmp_path: Path) -> None:
    monitor = AmplifierMonitor(
        "gpiochip1", 5, tmp_path / "relay.jsonl", active_high=False,
        gpioget_path=executable(tmp_path / "gpioget", STANDIN_GPIOGET),
        gpiomon_path=executable(tmp_path / "gpiomon",
                                STANDIN_GPIOMON.format(log=str(tmp_path / "emitted.json"))))
    monitor.start()
    try:
        wait_for(lambda: len(monitor.transitions()) == 3, 10, 0.05, "two edges")
    finally:
        monitor.stop()
    assert [t["on"] for t in monitor.transitions()] == [True, False, True]


def test_monitor_on_a_missing_chip_fails_with_gpiogets_message(tmp_path: Path) -> None:
    gpioget = executable(tmp_path / "gpioget", "import sys\n"
                         "print('gpioget: error reading GPIO values: No such file or directory',"
                         " file=sys.stderr)\nsys.exit(1)\n")
    monitor = AmplifierMonitor("gpiochip9", 5, tmp_path / "relay.jsonl", gpioget_path=gpioget)
    with pytest.raises(HilError, match=r"gpiochip9:5.*exited with 1: .*No such file"):
        monitor.start()


@pytest.mark.parametrize(("line", "rising", "offset", "timestamp"), [
    ("event:  RISING EDGE offset: 17 timestamp: [1700000000.123456789]\n", True, 17,
     1700000000.123456789),
    ("event: FALLING EDGE offset: 4 timestamp: [     123.000000001]", False, 4, 123.000000001),
])
def test_gpiomon_lines_parse(line: str, rising: bool, offset: int, timestamp: float) -> None:
    event = parse_gpiomon_line(line)
    assert (event.rising, event.offset) == (rising, offset)
    assert event.timestamp == pytest.approx(timestamp, abs=1e-6)


@pytest.mark.parametrize("line", ["", "event: RISING offset: 17 timestamp: [1.000000000]",
                                  "event:  RISING EDGE offset: x timestamp: [1.000000000]"])
def test_other_gpiomon_output_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not a gpiomon event line"):
        parse_gpiomon_line(line)


def test_event_stamps_of_either_kernel_clock_become_wall_time() -> None:
    now, monotonic_now = 1_700_000_000.0, 5_000.0
    assert to_wall_time(1_699_999_999.5, now, monotonic_now) == 1_699_999_999.5  # < 5.7
    assert to_wall_time(4_999.5, now, monotonic_now) == pytest.approx(1_699_999_999.5)


# ---- the rig description ------------------------------------------------------------------

def test_an_undescribed_rig_lists_every_missing_or_bad_variable() -> None:
    with pytest.raises(HilError) as error:
        HilRig.from_env({"BROADCAST_HIL_AMP_LINE": "seventeen",
                         "BROADCAST_HIL_AMP_MONITOR": "gpiochip0",
                         "BROADCAST_HIL_AMP_ACTIVE_HIGH": "yes"})
    message = str(error.value)
    for expected in ("BROADCAST_HIL_PLAYBACK is not set", "BROADCAST_HIL_CAPTURE is not set",
                     "BROADCAST_HIL_AMP_CHIP is not set", "'seventeen'",
                     "BROADCAST_HIL_AMP_MONITOR must be chip:line",
                     "BROADCAST_HIL_AMP_ACTIVE_HIGH must be 0 or 1"):
        assert expected in message


@pytest.mark.parametrize(("sdr", "fm"), [
    (None, {"backend": "none"}),
    ("rtl_fm", {"backend": "rtl_fm"}),
    ("127.0.0.1:1234", {"backend": "rtl_tcp", "rtl_tcp": "127.0.0.1:1234"}),
])
def test_the_rig_config_is_a_valid_agent_config(tmp_path: Path, sdr: str | None,
                                                fm: dict[str, Any]) -> None:
    env = {**RIG_ENV, "BROADCAST_HIL_AMP_ACTIVE_HIGH": "0",
           "BROADCAST_HIL_AMP_MONITOR": "gpiochip0:27", **({"BROADCAST_HIL_SDR": sdr} if sdr
                                                           else {})}
    the_rig = HilRig.from_env(env)
    assert the_rig.amp_monitor == ("gpiochip0", 27)
    config = base_config(tmp_path, "http://127.0.0.1:9/api/v1", **the_rig.config_overrides())
    path = tmp_path / "agent.yaml"
    (tmp_path / "state").mkdir()
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded.audio.output == "alsa:plughw:Loopback,0"
    assert (loaded.amplifier.backend, loaded.amplifier.gpio.chip, loaded.amplifier.gpio.line,
            loaded.amplifier.gpio.active_high) == ("gpio", "gpiochip0", 17, False)
    assert loaded.fm.backend == fm["backend"]
    if "rtl_tcp" in fm:
        assert loaded.fm.rtl_tcp == fm["rtl_tcp"]


# ---- the skip hook ------------------------------------------------------------------------

MARKED_TESTS = """
import pytest

@pytest.mark.hardware
def test_needs_the_rig(tmp_path_factory):
    open({ran!r}, "a").write("hardware\\n")

def test_runs_everywhere():
    open({ran!r}, "a").write("ordinary\\n")
"""


@pytest.mark.parametrize(("hil", "outcome", "ran"), [
    ("0", "1 passed, 1 skipped", ["ordinary"]),
    ("1", "2 passed", ["hardware", "ordinary"]),
])
def test_hardware_tests_run_only_with_broadcast_hil(tmp_path: Path, hil: str, outcome: str,
                                                    ran: list[str]) -> None:
    ran_log = tmp_path / "ran.txt"
    tests = tmp_path / "test_marked.py"
    tests.write_text(MARKED_TESTS.format(ran=str(ran_log)))
    env = {**os.environ, "BROADCAST_HIL": hil}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(REPO / "setup.cfg"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-p", "no:xdist", "-rs",
         str(tests)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in result.stdout, result.stdout + result.stderr
    assert sorted(ran_log.read_text().split()) == ran
    if hil == "0":
        assert "SKIPPED" in result.stdout and "BROADCAST_HIL=1" in result.stdout


# ---- on the rig ---------------------------------------------------------------------------

TONE_HZ = 1000.0
TONE_PEAK_DBFS = -6.0  # agent.playout.sources.tone
LEVEL_TOLERANCE_DB = 1.0
WARMUP_S = 0.5
RELAY_WITHIN_S = 0.05  # gpioset start plus the relay's and the monitor's reaction


def cli(config_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args, "--config", str(config_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def rig_agent(tmp_path: Path, source: Source) -> AgentProcess:
    """A stopped agent configured for the rig (its config written, its state dir made)."""
    source.publish([])
    agent = AgentProcess(tmp_path, base_config(
        tmp_path, source.url, health={"listen": f"127.0.0.1:{free_port()}"},
        amplifier={"warmup_s": WARMUP_S, "idle_off_s": 1}, audio={"default_volume": 100}))
    agent.state_dir.mkdir(parents=True)
    Path(agent.config["cache"]["dir"]).mkdir(parents=True)
    return agent


@pytest.fixture
def rig_recorder(tmp_path: Path) -> Iterator[CaptureRecorder]:
    recorder = CaptureRecorder(rig().capture, tmp_path / "heard.wav")
    recorder.start()
    yield recorder
    recorder.stop()
    assert recorder.overruns() == [], "the capture lost frames"


@pytest.mark.hardware
def test_doctor_passes_on_the_rig(rig_agent: AgentProcess) -> None:
    """Every check passes but the service one: the tests need the service stopped, since
    they run agents of their own on its sound card and relay."""
    result = cli(rig_agent.config_path, "doctor", "--json", timeout=120)
    checks = json.loads(result.stdout)
    failures = [c for c in checks if not c["ok"]]
    assert [f"{c['check']}: {c['detail']}" for c in failures if c["check"] != "service"] == []
    assert result.returncode == len(failures)


@pytest.mark.hardware
def test_test_tone_is_heard_on_the_capture(rig_agent: AgentProcess,
                                           rig_recorder: CaptureRecorder) -> None:
    result = cli(rig_agent.config_path, "test-tone", "--seconds", "2", "--frequency",
                 str(TONE_HZ), "--volume", "100")
    assert result.returncode == 0, result.stderr
    capture = read_capture(rig_recorder.path)  # test-tone ends 0.2 s after the tone
    first = capture.first_non_silent(threshold=300)
    assert first is not None, "the tone was not heard on " + rig().capture
    segment = capture.samples[first + RATE // 10:first + RATE // 10 + RATE]
    assert abs(tone_frequency(segment, capture.rate) - TONE_HZ) < 5
    expected_rms = TONE_PEAK_DBFS - 10 * math.log10(2) + rig().capture_gain_db
    assert rms_dbfs(segment) == pytest.approx(expected_rms, abs=LEVEL_TOLERANCE_DB)


@pytest.mark.hardware
def test_relay_monitor_sees_the_relay_switch_on_then_off(tmp_path: Path) -> None:
    the_rig = rig()
    if the_rig.amp_monitor is None:
        pytest.skip("BROADCAST_HIL_AMP_MONITOR is not set: the relay's output is not wired "
                    "to an input")
    chip, line = the_rig.amp_monitor
    monitor = AmplifierMonitor(chip, line, tmp_path / "relay.jsonl",
                               active_high=the_rig.amp_monitor_active_high)
    amplifier = GpioAmplifier(the_rig.amp_chip, the_rig.amp_line, the_rig.amp_active_high)
    monitor.start()
    try:
        switched_on = time.time()
        amplifier.set_power(True)
        time.sleep(0.5)
        switched_off = time.time()
        amplifier.set_power(False)
        wait_for(lambda: len(monitor.transitions()) >= 3, 5, 0.05, "the relay's two edges")
    finally:
        amplifier.close()
        monitor.stop()
    transitions = monitor.transitions()
    assert [t["on"] for t in transitions] == [False, True, False], transitions
    assert 0 <= transitions[1]["at"] - switched_on <= RELAY_WITHIN_S + 0.1  # gpioset settle
    assert 0 <= transitions[2]["at"] - switched_off <= RELAY_WITHIN_S + 1.0  # release wait


@pytest.mark.hardware
def test_sdr_receives_a_real_station_above_squelch(source: Source,
                                                   agent_factory: AgentFactory) -> None:
    the_rig = rig()
    if the_rig.sdr is None or the_rig.fm_mhz is None:
        pytest.skip("BROADCAST_HIL_SDR and BROADCAST_HIL_FM_MHZ name no dongle and station")
    start = float(math.floor(time.time()) - 1)
    source.publish([{**program("p-fm", [], start), "duration_s": 60,
                     "source": {"type": "fm", "frequency_mhz": the_rig.fm_mhz}}])
    agent = agent_factory(fm={"squelch_dbfs": -30.0})

    def relaying() -> dict[str, Any] | None:
        fm = agent.status().get("fm")
        return fm if fm and fm.get("frequency_mhz") == the_rig.fm_mhz else None
    fm = wait_for(relaying, 15, 0.2, "the relay tuned to the station")
    time.sleep(2)
    assert "fm_signal_lost" not in agent.fault_codes() and "sdr_missing" not in \
        agent.fault_codes()
    fm = agent.status()["fm"]
    if the_rig.sdr != "rtl_fm":  # rtl_fm reports no level (drivers/sdr/rtl_fm.py)
        assert fm["signal_dbfs"] > -30.0
    heard = capture_until(agent, time.time())
    assert rms_dbfs(heard.segment(time.time() - 1.5, 1.0)) > -40.0, "the station is silent"
