"""The fake-rtl-tcp command: another process drives its switches over the control port."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.sdr.base import SdrStalled
from drivers.sdr.rtl_tcp import CMD_FREQUENCY, RtlTcpReceiver
from tests.support.agentproc import wait_for
from tests.support.fake_rtl_tcp import measure_tone


@pytest.fixture
def fake_process() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_rtl_tcp", "--port", "0", "--control-port", "0",
         "--station", "100.0:1000", "--station", "101.5:2500"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ports = json.loads(process.stdout.readline())
        yield process, ports["port"], ports["control_port"]
    finally:
        process.terminate()
        process.wait(timeout=5)


def control(port: int, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def receive(receiver: RtlTcpReceiver, seconds: float) -> bytes:
    pcm = b""
    deadline = time.monotonic() + seconds + 5
    while len(pcm) < round(seconds * 48_000) * 4 and time.monotonic() < deadline:
        pcm += receiver.read(0.5)
    return pcm


def test_switches_from_another_process(
        fake_process: tuple[subprocess.Popen[str], int, int]) -> None:
    process, port, control_port = fake_process
    receiver = RtlTcpReceiver("127.0.0.1", port, sample_rate=240_000, gain_db=None, ppm=0)
    receiver.start(101.5)
    try:
        pcm = receive(receiver, 0.8)[round(0.3 * 48_000) * 4 :]
        assert measure_tone(pcm, 2500.0).snr_db >= 40
        state = control(control_port, "GET", "/state")
        assert state["clients"] == 1 and state["tuned_hz"] == [101_500_000]
        assert [CMD_FREQUENCY, 101_500_000] in state["commands"]

        assert control(control_port, "POST", "/signal?on=0")["signal_on"] is False
        receive(receiver, 0.5)  # flush what was in flight
        receive(receiver, 0.1)
        assert receiver.signal_dbfs is not None and receiver.signal_dbfs < -40

        assert control(control_port, "POST", "/stall?on=1")["stalled"] is True
        assert control(control_port, "POST", "/stall?on=0")["stalled"] is False
        control(control_port, "POST", "/disconnect")
        with pytest.raises(SdrStalled, match="rtl_tcp"):
            receive(receiver, 5)
        # The server forgets a client when that client's thread sees its socket shut.
        wait_for(lambda: control(control_port, "GET", "/state")["clients"] == 0, 5,
                 what="the fake to forget its client")
    finally:
        receiver.stop()
    process.terminate()
    assert process.wait(timeout=5) == 0


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/signal?on=maybe", 400), ("POST", "/reboot", 400), ("GET", "/nothing", 404)])
def test_bad_control_requests_are_refused(fake_process: tuple[subprocess.Popen[str], int, int],
                                          method: str, path: str, status: int) -> None:
    _, _, control_port = fake_process
    with pytest.raises(urllib.error.HTTPError) as error:
        control(control_port, method, path)
    assert error.value.code == status
    assert "error" in json.loads(error.value.read())


@pytest.mark.parametrize("station", ["abc:1000", "100.0:-5"])
def test_bad_station_argument_is_a_usage_error(station: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.fake_rtl_tcp", "--port", "0", "--station", station],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "station" in result.stderr
