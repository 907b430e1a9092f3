"""The FM receivers the agent holds run their demodulator in a worker process: the agent
never imports numpy or scipy for FM, and a worker that fails says why."""

import subprocess
import sys

import pytest

from drivers.sdr.base import SdrSettings, SdrStalled
from drivers.sdr.worker import (
    HEADER,
    PCM,
    READY,
    RtlTcpWorker,
    encode,
    encode_pcm,
)

SETTINGS = SdrSettings("127.0.0.1:1234", 240_000, None, 0)


def test_opening_the_default_receiver_imports_no_demodulator():
    code = ("import sys; from drivers.sdr import open_receiver; "
            "from drivers.sdr.usb import reset_rtl_usb; "
            "open_receiver('rtl_fm', rtl_tcp_address='', sample_rate=240000, gain_db=None, "
            "ppm=0); open_receiver('rtl_tcp', rtl_tcp_address='127.0.0.1:1234', "
            "sample_rate=240000, gain_db=None, ppm=0); "
            "print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_messages_are_kind_length_payload():
    assert encode(READY) == b"R\x00\x00\x00\x00"
    message = encode_pcm(None, b"\x01\x00\x01\x00")
    kind, size = HEADER.unpack_from(message)
    assert (kind, size, len(message)) == (PCM, 12, HEADER.size + 12)
    assert message[HEADER.size:HEADER.size + 8] == b"\x7f\xf8" + bytes(6)  # NaN: no level


def test_worker_command_carries_the_settings():
    worker = RtlTcpWorker(SdrSettings("10.0.0.2:7373", 960_000, 20.7, -3), python="py")
    assert worker.command(100.1) == [
        "py", "-m", "drivers.sdr.demod_worker", "rtl_tcp", "--frequency-mhz", "100.1",
        "--rtl-tcp", "10.0.0.2:7373", "--sample-rate", "960000", "--ppm", "-3",
        "--gain-db", "20.7"]


def test_a_worker_that_exits_before_tuning_is_a_stall_with_its_exit_code():
    worker = RtlTcpWorker(SETTINGS, python="/bin/false")
    with pytest.raises(SdrStalled, match="worker exited with 1"):
        worker.start(100.0)


def test_a_worker_that_never_tunes_is_stopped_after_the_startup_timeout():
    worker = RtlTcpWorker(SETTINGS, python="/bin/sleep", startup_timeout_s=0.3)
    worker.command = lambda frequency_mhz: ["/bin/sleep", "30"]  # type: ignore[method-assign]
    with pytest.raises(SdrStalled, match="did not tune within 0 s"):
        worker.start(100.0)
    with pytest.raises(SdrStalled, match="not started"):
        worker.read(0.01)


def test_worker_relays_the_fake_station_with_its_level():
    from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation

    with FakeRtlTcpServer([FakeStation(100.0e6, 1000.0)]) as fake:
        worker = RtlTcpWorker(SdrSettings(f"127.0.0.1:{fake.port}", 240_000, None, 0))
        worker.start(100.0)
        try:
            pcm = b""
            for _ in range(100):
                pcm += worker.read(0.1)
                if len(pcm) >= 48_000:
                    break
            assert len(pcm) >= 48_000 and len(pcm) % 4 == 0
            assert worker.signal_dbfs == pytest.approx(-6.0, abs=0.5)
        finally:
            worker.stop()
        assert worker.signal_dbfs is not None
