"""rtl_tcp protocol: header, commands, and what a real TCP exchange with the fake carries."""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from drivers.sdr import receiver_factory
from drivers.sdr.base import SdrMissing, SdrStalled
from drivers.sdr.none import NoReceiver
from drivers.sdr.rtl_fm import RtlFmReceiver
from drivers.sdr.rtl_tcp import (
    CMD_FREQUENCY,
    CMD_GAIN,
    CMD_GAIN_MODE,
    CMD_PPM,
    CMD_SAMPLE_RATE,
    RtlTcpHeader,
    RtlTcpReceiver,
    decode_command,
    encode_command,
    encode_header,
    parse_address,
    parse_header,
    tuning_commands,
)
from tests.support.agentproc import wait_for
from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation


def test_header_round_trip_and_layout() -> None:
    data = encode_header(RtlTcpHeader(tuner_type=5, gain_count=29))
    assert data == b"RTL0\x00\x00\x00\x05\x00\x00\x00\x1d"
    assert parse_header(data) == RtlTcpHeader(5, 29)


@pytest.mark.parametrize("data", [b"", b"RTL0\x00", b"HTTP/1.1 200", b"XTL0" + bytes(8)])
def test_header_rejects_what_is_not_rtl_tcp(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an rtl_tcp header"):
        parse_header(data)


def test_commands_are_u8_plus_u32_big_endian() -> None:
    assert encode_command(CMD_FREQUENCY, 100_000_000) == b"\x01\x05\xf5\xe1\x00"
    assert encode_command(CMD_PPM, -3) == b"\x05\xff\xff\xff\xfd"
    assert decode_command(b"\x02\x00\x03\xa9\x80") == (CMD_SAMPLE_RATE, 240_000)


def test_tuning_commands_auto_and_manual_gain() -> None:
    auto = [decode_command(c) for c in tuning_commands(99_760_000, 960_000, None, 0)]
    assert auto == [(CMD_SAMPLE_RATE, 960_000), (CMD_FREQUENCY, 99_760_000), (CMD_GAIN_MODE, 0),
                    (CMD_PPM, 0)]
    manual = [decode_command(c) for c in tuning_commands(100_000_000, 240_000, 33.8, 12)]
    assert manual == [(CMD_SAMPLE_RATE, 240_000), (CMD_FREQUENCY, 100_000_000),
                      (CMD_GAIN_MODE, 1), (CMD_GAIN, 338), (CMD_PPM, 12)]


@pytest.fixture
def fake() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer([FakeStation(100.0e6, 1000.0)]) as server:
        yield server



@pytest.mark.parametrize(("sample_rate", "gain_db", "ppm", "centre_hz"), [
    (240_000, None, 0, 100_000_000),  # centred: no room to move at 240 kS/s
    (960_000, 20.7, -7, 99_760_000),  # station placed fs/4 above the tuned centre
])
def test_fake_receives_exactly_the_commands_sent(fake: FakeRtlTcpServer, sample_rate: int,
                                                 gain_db: float | None, ppm: int,
                                                 centre_hz: int) -> None:
    receiver = RtlTcpReceiver("127.0.0.1", fake.port, sample_rate=sample_rate, gain_db=gain_db,
                              ppm=ppm)
    receiver.start(100.0)
    try:
        sent = [decode_command(c) for c in tuning_commands(centre_hz, sample_rate, gain_db, ppm)]
        assert receiver.header == RtlTcpHeader(5, 29)
        assert receiver.centre_hz == centre_hz
        wait_for(lambda: fake.commands == sent, 5, what="the commands sent")
        wait_for(lambda: fake.state()["tuned_hz"] == [centre_hz], 5, what="the tuning")
    finally:
        receiver.stop()


def test_no_server_is_sdr_missing() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    receiver = RtlTcpReceiver("127.0.0.1", port, sample_rate=240_000, gain_db=None, ppm=0)
    with pytest.raises(SdrMissing, match=f"no rtl_tcp at 127.0.0.1:{port}"):
        receiver.start(100.0)


def test_a_server_that_is_not_rtl_tcp_is_sdr_missing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        thread = threading.Thread(target=answer_http, name="fake-http")
        thread.start()
        receiver = RtlTcpReceiver("127.0.0.1", listener.getsockname()[1], sample_rate=240_000,
                                  gain_db=None, ppm=0)
        with pytest.raises(SdrMissing, match="did not answer as rtl_tcp"):
            receiver.start(100.0)
        thread.join(timeout=2)


def read_until_pcm(receiver: RtlTcpReceiver, timeout_s: float = 3.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pcm = receiver.read(0.2)
        if pcm:
            return pcm
    raise AssertionError("no PCM")


def test_closed_connection_is_sdr_stalled(fake: FakeRtlTcpServer) -> None:
    receiver = RtlTcpReceiver("127.0.0.1", fake.port, sample_rate=240_000, gain_db=None, ppm=0)
    receiver.start(100.0)
    try:
        assert len(read_until_pcm(receiver)) % 4 == 0
        fake.disconnect_clients()
        with pytest.raises(SdrStalled, match="rtl_tcp"):
            for _ in range(100):
                receiver.read(0.1)
    finally:
        receiver.stop()


def test_stalled_server_reads_empty_then_resumes(fake: FakeRtlTcpServer) -> None:
    receiver = RtlTcpReceiver("127.0.0.1", fake.port, sample_rate=240_000, gain_db=None, ppm=0)
    receiver.start(100.0)
    try:
        read_until_pcm(receiver)
        fake.stall(True)
        # What was in flight drains first.
        wait_for(lambda: receiver.read(0.1) == b"", 5, what="the reads to drain")
        fake.stall(False)
        assert read_until_pcm(receiver)
    finally:
        receiver.stop()


def test_relaying_brings_numpy_and_never_scipy(fake: FakeRtlTcpServer) -> None:
    """scipy is no dependency of the product (issue 10); numpy comes with the first relay."""
    probe = f"""
import sys, time
from drivers.sdr.rtl_tcp import RtlTcpReceiver
receiver = RtlTcpReceiver("127.0.0.1", {fake.port}, sample_rate=960_000, gain_db=None, ppm=0)
before = "numpy" in sys.modules
receiver.start(100.0)
deadline = time.monotonic() + 30
while not receiver.read(0.2) and time.monotonic() < deadline:
    pass
print(before, receiver.signal_dbfs is not None, "numpy" in sys.modules, "scipy" in sys.modules)
receiver.stop()
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == ["False", "True", "True", "False"], result.stderr


def test_factory() -> None:
    none = receiver_factory("none", rtl_tcp_address="", sample_rate=240_000, gain_db=None,
                            ppm=0)()
    assert isinstance(none, NoReceiver)
    with pytest.raises(SdrMissing, match=r"no FM receiver configured \(fm\.backend: none\)"):
        none.start(100.0)
    assert none.signal_dbfs is None
    assert isinstance(receiver_factory("rtl_fm", rtl_tcp_address="", sample_rate=240_000,
                                       gain_db=None, ppm=0)(), RtlFmReceiver)
    make_rtl_tcp = receiver_factory("rtl_tcp", rtl_tcp_address="127.0.0.1:1234",
                                    sample_rate=240_000, gain_db=None, ppm=0)
    first, second = make_rtl_tcp(), make_rtl_tcp()
    assert isinstance(first, RtlTcpReceiver) and isinstance(second, RtlTcpReceiver)
    assert first is not second  # each session of the tuner gets a fresh receiver
    with pytest.raises(ValueError, match=r"unknown fm\.backend 'pyrtlsdr'.*rtl_fm, rtl_tcp, none"):
        receiver_factory("pyrtlsdr", rtl_tcp_address="", sample_rate=240_000, gain_db=None,
                         ppm=0)


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:1234", ("127.0.0.1", 1234)),
    ("sdr.local:7373", ("sdr.local", 7373)),
    ("[::1]:1234", ("::1", 1234)),
])
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "1234", "host:", ":1234", "host:http", "host:70000"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_address(address)
