"""`broadcast-agent doctor` on this machine: real drivers, a real Mosquitto, the real source
simulator, the fake rtl_tcp server; the hardware this machine lacks fails with its hint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.doctor.command import exit_code
from agent.cli.doctor.results import failed, msg, passed, warned
from agent.cli.doctor.sdr import find_rtl_sdr_dongles
from tests.support.agentproc import free_port
from tests.support.fake_rtl_tcp import FakeRtlTcpServer
from tests.support.mosquitto import Mosquitto
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import DEVICE, TOKEN, schedule_doc, write_schedule


def _write_config(directory: Path, body: str) -> Path:
    (directory / "state").mkdir(exist_ok=True)
    (directory / "cache").mkdir(exist_ok=True)
    path = directory / "agent.yaml"
    path.write_text(f"device_id: {DEVICE}\nstate_dir: state\ncache:\n  dir: cache\n" + body)
    return path


def _doctor(config: Path, *args: str, language: str = "C.UTF-8"
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LANG": language, "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
    return subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=120, env=env)


def _results(run: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(run.stdout)
    assert run.returncode == (1 if any(not r["ok"] for r in results) else 0), run.stdout
    return results


def _only(results: list[dict[str, Any]], check: str) -> dict[str, Any]:
    matching = [r for r in results if r["check"] == check]
    assert len(matching) == 1, matching
    return matching[0]


def _assert_config_valid(results: list[dict[str, Any]]) -> None:
    """Valid: one pass, and warnings only (these configs write their secrets inline)."""
    config = [r["severity"] for r in results if r["check"] == "config"]
    assert config[0] == "pass" and set(config[1:]) <= {"warn"}, config


@pytest.fixture
def source(tmp_path: Path) -> Iterator[SourceSimulator]:
    content = tmp_path / "content"
    content.mkdir()
    write_schedule(content, schedule_doc(1, DEVICE, []))
    with SourceSimulator(content, DEVICE, TOKEN) as simulator:
        yield simulator


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto.start(tmp_path / "mosquitto", devices={DEVICE: []})
    yield broker
    broker.stop()


@pytest.fixture
def rtl_tcp() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer([]) as server:
        yield server


def test_missing_hardware_fails_with_hints(tmp_path: Path) -> None:
    config = _write_config(tmp_path, f"""\
source:
  url: http://127.0.0.1:{free_port()}/api/v1
  token: {TOKEN}
mqtt:
  brokers: []
audio:
  output: alsa:default
amplifier:
  backend: gpio
  gpio: {{chip: gpiochip0, line: 17, active_high: true}}
fm:
  backend: rtl_fm
""")
    results = _results(_doctor(config, "--json"))

    assert set(results[0]) == {"check", "ok", "severity", "detail", "hint"}
    _assert_config_valid(results)
    audio = _only(results, "audio")
    assert (audio["ok"], audio["severity"]) == (False, "fail")
    assert "alsa:default" in audio["detail"] and "aplay -l" in audio["hint"]
    amplifier = _only(results, "amplifier")
    assert not amplifier["ok"] and "gpiodetect" in amplifier["hint"]
    sdr = _only(results, "sdr")
    assert not sdr["ok"] and "0bda:2838" in sdr["detail"] and "rtl_test" in sdr["hint"]
    unreachable = _only(results, "source")
    assert not unreachable["ok"] and "source.url" in unreachable["hint"]
    assert _only(results, "mqtt")["severity"] == "pass"  # no brokers: MQTT is off
    assert _only(results, "mixer")["severity"] == "pass"  # software gain
    assert _only(results, "state_dir")["ok"] and _only(results, "cache_dir")["ok"]
    service = _only(results, "service")
    if not Path("/run/systemd/system").is_dir():  # this machine: no systemd as init
        assert service["severity"] == "warn" and service["ok"]


def test_stand_ins_and_network_pass(tmp_path: Path, source: SourceSimulator,
                                    broker: Mosquitto, rtl_tcp: FakeRtlTcpServer) -> None:
    config = _write_config(tmp_path, f"""\
source:
  url: {source.url}
  token: {TOKEN}
mqtt:
  brokers: ["{broker.uri}", "{broker.tls_uri}"]
  username: {DEVICE}
  password: {broker.passwords[DEVICE]}
  ca_file: {broker.ca_file}
audio:
  output: wav:out/agent.wav
amplifier:
  backend: sim
fm:
  backend: rtl_tcp
  rtl_tcp: 127.0.0.1:{rtl_tcp.port}
""")
    (tmp_path / "out").mkdir()
    results = _results(_doctor(config, "--json"))

    _assert_config_valid(results)
    for check in ("audio", "mixer", "amplifier", "sdr", "source", "state_dir"):
        assert _only(results, check)["severity"] == "pass", _only(results, check)
    assert "R820T" in _only(results, "sdr")["detail"]
    assert "HTTP 200" in _only(results, "source")["detail"]
    mqtt = [r for r in results if r["check"] == "mqtt"]
    assert [r["severity"] for r in mqtt] == ["pass", "pass"], mqtt
    # The checks worked on scratch files: the agent's own outputs are untouched.
    assert list((tmp_path / "out").iterdir()) == []
    assert list((tmp_path / "state").iterdir()) == []


def test_network_failures_name_their_cause(tmp_path: Path, source: SourceSimulator,
                                           broker: Mosquitto) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says RTL0
        config = _write_config(tmp_path, f"""\
source:
  url: https://localhost:{broker.tls_port}/api/v1
  token: {TOKEN}
mqtt:
  brokers: ["{broker.uri}"]
  username: {DEVICE}
  password: wrong
audio:
  output: wav:agent.wav
amplifier:
  backend: none
fm:
  backend: rtl_tcp
  rtl_tcp: 127.0.0.1:{silent.getsockname()[1]}
""")
        results = _results(_doctor(config, "--json"))

    tls = _only(results, "source")
    assert not tls["ok"] and "source.ca_file" in tls["hint"] and "clock" in tls["hint"]
    refused = _only(results, "mqtt")
    assert not refused["ok"] and "refused" in refused["detail"]
    assert "mqtt.password" in refused["hint"]
    header = _only(results, "sdr")
    assert not header["ok"] and "RTL0" in header["detail"]


def test_wrong_token_is_reported_as_such(tmp_path: Path, source: SourceSimulator) -> None:
    config = _write_config(tmp_path, f"""\
source:
  url: {source.url}
  token: not-the-token
mqtt:
  brokers: []
audio:
  output: wav:agent.wav
amplifier:
  backend: none
fm:
  backend: none
""")
    results = _results(_doctor(config, "--json"))
    refused = _only(results, "source")
    assert not refused["ok"] and "HTTP 403" in refused["detail"]  # the simulator's answer
    assert "source.token" in refused["hint"]


def test_exit_code_is_0_1_or_2_as_config_md_says() -> None:
    ok = passed("clock", msg("synchronised"))
    warning = warned("disk", msg("150 MB free"), msg("prune the cache"))
    failures = [failed(check, msg("missing"), msg("plug it in")) for check in ("audio", "sdr")]
    assert exit_code(True, [ok, warning]) == 0
    assert exit_code(True, [ok, *failures]) == 1  # two failures are not "bad config"
    assert exit_code(False, [ok, *failures]) == 2


def test_invalid_config_exits_2_and_still_checks_the_machine(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("device_id: x\nsource:\n  url: ftp://nowhere\naudio:\n  volume: 3\n")
    run = _doctor(config, "--json")
    results = json.loads(run.stdout)

    assert run.returncode == 2
    errors = [r["detail"] for r in results if r["check"] == "config"]
    assert any(f"{config}:3: source.url" in e for e in errors), errors
    assert any(f"{config}:5: audio.volume: unknown key" in e for e in errors), errors
    assert {r["check"] for r in results} == {"config", "clock", "service"}


def test_report_in_english_and_vietnamese(tmp_path: Path) -> None:
    config = _write_config(tmp_path, f"""\
source:
  url: http://127.0.0.1:{free_port()}/api/v1
mqtt:
  brokers: []
audio:
  output: alsa:default
amplifier:
  backend: none
fm:
  backend: none
""")
    english = _doctor(config)
    vietnamese = _doctor(config, language="vi_VN.UTF-8")

    assert english.returncode == vietnamese.returncode == 1
    assert "[FAIL] Audio output: cannot open alsa:default" in english.stdout
    assert "→ List the sound cards with `aplay -l`" in english.stdout
    assert "[FAIL] Đầu ra âm thanh: không mở được alsa:default" in vietnamese.stdout
    assert "→ Xem danh sách card âm thanh bằng `aplay -l`" in vietnamese.stdout
    assert "lỗi," in vietnamese.stdout.splitlines()[-1]


def test_language_variable_selects_vietnamese(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("device_id: [\n")
    env = {**os.environ, "LANG": "C.UTF-8", "LANGUAGE": "vi", "LC_ALL": ""}
    run = subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2
    assert "[FAIL] Cấu hình:" in run.stdout
    assert "Sửa từng dòng ở trên" in run.stdout


def test_rtl_sdr_dongle_found_by_usb_id(tmp_path: Path) -> None:
    def usb_device(name: str, vendor: str, product: str, bus: int, number: int) -> None:
        device = tmp_path / name
        device.mkdir()
        for attribute, value in (("idVendor", vendor), ("idProduct", product),
                                 ("busnum", str(bus)), ("devnum", str(number))):
            (device / attribute).write_text(value + "\n")

    usb_device("1-1", "1d6b", "0002", 1, 1)  # a root hub
    usb_device("1-1.3", "0bda", "2838", 1, 4)
    (tmp_path / "1-1.3:1.0").mkdir()  # an interface directory, no ids

    dongles = find_rtl_sdr_dongles(tmp_path)
    assert [(d.sysfs.name, d.node) for d in dongles] == [
        ("1-1.3", Path("/dev/bus/usb/001/004"))]
