"""FmTuner: the supervised relay, against the fake rtl_tcp over real TCP and the real rtl_fm."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

import pytest

from agent.core.clock import SystemClock
from agent.core.faults import FaultRegistry
from agent.playout.fm_tuner import FmTuner
from drivers.sdr import FmReceiver, receiver_factory
from drivers.sdr.none import NoReceiver
from drivers.sdr.rtl_fm import reset_rtl_usb
from drivers.sdr.rtl_tcp import CMD_SAMPLE_RATE
from tests.support.agentproc import wait_for
from tests.support.fake_rtl_tcp import FakeRtlTcpServer, FakeStation, measure_tone

# The fake SDR server makes IQ in real time with numpy: tests that use it share one
# worker, or on 2 cores they starve each other and the starved fake drops samples.
pytestmark = pytest.mark.xdist_group("sdr")

PERIOD_FRAMES = 480  # the engine reads 10 ms at a time


class TunerOptions(TypedDict, total=False):
    """FmTuner's keyword-only options."""

    usb_reset: Callable[[], object] | None
    buffer_s: float
    prefill_s: float
    stall_after_s: float
    lost_after_s: float
    backoff_initial_s: float
    backoff_max_s: float


class MakeTuner(Protocol):
    def __call__(self, factory: Callable[[], FmReceiver],
                 **options: Unpack[TunerOptions]) -> FmTuner: ...


@pytest.fixture
def fake() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer([FakeStation(100.0e6, 1000.0)]) as server:
        yield server


@pytest.fixture
def faults() -> FaultRegistry:
    return FaultRegistry(time.time)


def rtl_tcp_factory(port: int) -> Callable[[], FmReceiver]:
    return receiver_factory("rtl_tcp", rtl_tcp_address=f"127.0.0.1:{port}",
                            sample_rate=240_000, gain_db=None, ppm=0)


@pytest.fixture
def make_tuner(faults: FaultRegistry) -> Iterator[MakeTuner]:
    tuners: list[FmTuner] = []

    def make(factory: Callable[[], FmReceiver], **options: Unpack[TunerOptions]) -> FmTuner:
        tuner = FmTuner(factory, faults, SystemClock(), squelch_dbfs=-30.0, **options)
        tuners.append(tuner)
        return tuner

    yield make
    for tuner in tuners:
        tuner.stop()



def play(tuner: FmTuner, seconds: float) -> bytes:
    """Reads like the playout engine: 10 ms every 10 ms."""
    pcm = b""
    for _ in range(round(seconds * 100)):
        chunk = tuner.read(PERIOD_FRAMES)
        assert len(chunk) == PERIOD_FRAMES * 4
        pcm += chunk
        time.sleep(0.01)
    return pcm


def is_silent(pcm: bytes) -> bool:
    return pcm == bytes(len(pcm))


def test_relays_the_tuned_station(fake: FakeRtlTcpServer, faults: FaultRegistry,
                                  make_tuner: MakeTuner) -> None:
    tuner = make_tuner(rtl_tcp_factory(fake.port))
    assert is_silent(tuner.read(PERIOD_FRAMES))
    tuner.tune(100.0)
    assert tuner.frequency_mhz == 100.0
    wait_for(lambda: tuner.signal_ok, 5)
    play(tuner, 0.3)  # past the start-up transient
    tone = measure_tone(play(tuner, 0.5), 1000.0)
    assert tone.snr_db >= 40
    assert tuner.signal_dbfs == pytest.approx(-6.0, abs=0.5)
    assert faults.active() == []
    assert [t.name for t in threading.enumerate()].count("fm") == 1


def test_tuned_elsewhere_is_signal_lost_and_silence(fake: FakeRtlTcpServer, faults: FaultRegistry,
                                                    make_tuner: MakeTuner) -> None:
    tuner = make_tuner(rtl_tcp_factory(fake.port))
    tuner.tune(99.0)
    wait_for(lambda: faults.is_raised("fm_signal_lost"), 3)
    assert "99.0 MHz" in next(f.message for f in faults.active() if f.code == "fm_signal_lost")
    assert tuner.signal_dbfs is not None and tuner.signal_dbfs < -30
    assert not tuner.signal_ok
    assert is_silent(play(tuner, 0.2))
    tuner.tune(100.0)  # retune: the station is there
    wait_for(lambda: tuner.signal_ok, 5)


def test_signal_drop_mid_relay_raises_and_clears(fake: FakeRtlTcpServer, faults: FaultRegistry,
                                                 make_tuner: MakeTuner) -> None:
    tuner = make_tuner(rtl_tcp_factory(fake.port))
    tuner.tune(100.0)
    wait_for(lambda: tuner.signal_ok, 5)
    fake.drop_signal(True)
    wait_for(lambda: faults.is_raised("fm_signal_lost"), 3)
    assert is_silent(play(tuner, 0.2))
    fake.drop_signal(False)
    wait_for(lambda: not faults.is_raised("fm_signal_lost") and tuner.signal_ok, 5)
    assert not is_silent(play(tuner, 0.2))


def test_stall_restarts_the_receiver_and_recovers(fake: FakeRtlTcpServer, faults: FaultRegistry,
                                                  make_tuner: MakeTuner) -> None:
    usb_resets: list[int] = []
    tuner = make_tuner(rtl_tcp_factory(fake.port), usb_reset=lambda: usb_resets.append(1))
    tuner.tune(100.0)
    wait_for(lambda: tuner.signal_ok, 5)
    fake.stall(True)
    wait_for(lambda: faults.is_raised("sdr_stalled"), 5)
    assert usb_resets == [1]
    assert not faults.is_raised("fm_signal_lost")  # the receiver is at fault, not the station
    fake.stall(False)
    wait_for(lambda: not faults.is_raised("sdr_stalled") and tuner.signal_ok, 5)
    commands = [c for c, _ in fake.commands]
    assert commands.count(CMD_SAMPLE_RATE) >= 2  # it reconnected


def test_disconnect_reconnects(fake: FakeRtlTcpServer, faults: FaultRegistry,
                               make_tuner: MakeTuner) -> None:
    tuner = make_tuner(rtl_tcp_factory(fake.port))
    tuner.tune(100.0)
    wait_for(lambda: tuner.signal_ok, 5)
    fake.disconnect_clients()
    wait_for(lambda: [c for c, _ in fake.commands].count(CMD_SAMPLE_RATE) == 2, 5)
    wait_for(lambda: tuner.signal_ok and not faults.is_raised("sdr_stalled"), 5)
    assert not is_silent(play(tuner, 0.5))


def test_no_server_is_sdr_missing_and_reads_stay_silent(faults: FaultRegistry,
                                                        make_tuner: MakeTuner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tuner = make_tuner(rtl_tcp_factory(port))
    tuner.tune(100.0)
    wait_for(lambda: faults.is_raised("sdr_missing"), 3)
    assert f"127.0.0.1:{port}" in faults.active()[0].message
    assert tuner.running and not tuner.signal_ok
    assert is_silent(tuner.read(PERIOD_FRAMES))
    tuner.stop()
    assert not tuner.running
    assert faults.active() == []


def test_rtl_fm_without_dongle_is_sdr_missing(faults: FaultRegistry, make_tuner: MakeTuner) -> None:
    factory = receiver_factory("rtl_fm", rtl_tcp_address="", sample_rate=240_000,
                               gain_db=None, ppm=0)
    tuner = make_tuner(factory)
    tuner.tune(100.0)
    wait_for(lambda: faults.is_raised("sdr_missing"), 3)
    assert "No supported devices found" in faults.active()[0].message
    assert is_silent(tuner.read(PERIOD_FRAMES))


def test_backend_none_is_sdr_missing_saying_why(faults: FaultRegistry,
                                                make_tuner: MakeTuner) -> None:
    tuner = make_tuner(receiver_factory("none", rtl_tcp_address="", sample_rate=240_000,
                                        gain_db=None, ppm=0))
    tuner.tune(100.0)
    wait_for(lambda: faults.is_raised("sdr_missing"), 3)
    assert faults.active()[0].message == "no FM receiver configured (fm.backend: none)"
    assert is_silent(tuner.read(PERIOD_FRAMES))
    tuner.stop()
    assert faults.active() == []


def test_only_48khz() -> None:
    with pytest.raises(ValueError, match="48000"):
        FmTuner(NoReceiver, FaultRegistry(time.time), SystemClock(), -30.0, rate=44100)


def test_usb_reset_toggles_rtl2832u_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def device(name: str, vendor: str, product: str, authorized: bool = True) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "idVendor").write_text(vendor + "\n")
        (path / "idProduct").write_text(product + "\n")
        if authorized:
            (path / "authorized").write_text("1\n")
        else:
            (path / "authorized").mkdir()  # cannot be written: like a permission error
        return path

    dongle = device("1-1.2", "0bda", "2838")
    other = device("1-1.3", "046d", "c52b")
    device("1-1.4", "0bda", "2832", authorized=False)
    (tmp_path / "usb1").mkdir()  # a hub without ids
    assert reset_rtl_usb(tmp_path) == ["1-1.2"]
    assert (dongle / "authorized").read_text() == "1"
    assert (other / "authorized").read_text() == "1\n"
    assert "cannot reset USB device 1-1.4" in caplog.text
    assert reset_rtl_usb(tmp_path / "absent") == []


def test_retuning_and_going_idle_never_wait_for_the_receiver(faults: FaultRegistry,
                                                             make_tuner: MakeTuner) -> None:
    """The control thread calls tune() (through acquire and release): it must return while
    the fm thread is still stuck starting a receiver (an rtl_tcp server that accepted the
    connection and never sends its header)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(5)
        tuner = make_tuner(rtl_tcp_factory(listener.getsockname()[1]))
        tuner.tune(100.0)
        connection, _ = listener.accept()  # the fm thread now waits for the header
        with connection:
            tuner.tune(101.0)
            tuner.tune(None)
            assert not tuner.running and tuner.frequency_mhz is None
            connection.setblocking(False)
            try:
                still_waiting = connection.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                still_waiting = True
            assert still_waiting, "tune() returned only once the receiver had given up"
    assert is_silent(tuner.read(PERIOD_FRAMES))


def test_nothing_of_the_old_station_is_read_after_a_retune(fake: FakeRtlTcpServer,
                                                         faults: FaultRegistry,
                                                         make_tuner: MakeTuner) -> None:
    tuner = make_tuner(rtl_tcp_factory(fake.port))
    tuner.tune(100.0)
    wait_for(lambda: tuner.signal_ok, 5)
    tuner.tune(99.0)  # nothing there: whatever is read from now on is silence
    assert is_silent(play(tuner, 0.5))
