"""WBFM demodulation: the fake station through real TCP comes out as a clean tone at the
expected level; the signal level follows hil.md; blocks join without seams."""

import math
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from drivers.sdr.base import SdrMissing
from drivers.sdr.rtl_fm import RtlFmReceiver
from drivers.sdr.rtl_tcp import RtlTcpReceiver
from drivers.sdr.wbfm import WbfmDemodulator, default_offset_hz
from tests.support.fake_rtl_tcp import (
    FakeRtlTcpServer,
    FakeStation,
    expected_amplitude,
    measure_tone,
)

STATIONS = [FakeStation(100.0e6, 1000.0), FakeStation(100.6e6, 3000.0)]
SQUELCH_DBFS = -30.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeRtlTcpServer]:
    with FakeRtlTcpServer(STATIONS) as server:
        yield server


def relay(port: int, frequency_mhz: float, sample_rate: int,
          seconds: float) -> tuple[bytes, float | None]:
    """PCM received through rtl_tcp after the first 300 ms (filters and tuner settling)."""
    receiver = RtlTcpReceiver("127.0.0.1", port, sample_rate=sample_rate, gain_db=None, ppm=0)
    receiver.start(frequency_mhz)
    pcm = b""
    wanted = round((seconds + 0.3) * 48_000) * 4
    deadline = time.monotonic() + seconds + 5
    try:
        while len(pcm) < wanted and time.monotonic() < deadline:
            pcm += receiver.read(0.5)
        # The last read may bring more than wanted (a burst after a late wake-up).
        return pcm[round(0.3 * 48_000) * 4 : wanted], receiver.signal_dbfs
    finally:
        receiver.stop()


@pytest.mark.parametrize("sample_rate", [240_000, 960_000, 1_024_000])
@pytest.mark.parametrize("station", STATIONS)
def test_station_demodulates_to_a_clean_tone_at_the_expected_level(fake: FakeRtlTcpServer,
                                                                   sample_rate: int,
                                                                   station: FakeStation) -> None:
    pcm, level = relay(fake.port, station.frequency_hz / 1e6, sample_rate, 0.5)
    assert len(pcm) == round(0.5 * 48_000) * 4
    left, right = np.frombuffer(pcm, "<i2")[0::2], np.frombuffer(pcm, "<i2")[1::2]
    assert np.array_equal(left, right)
    tone = measure_tone(pcm, station.tone_hz)
    assert tone.snr_db >= 40
    level_error_db = 20 * math.log10(tone.amplitude / expected_amplitude(station))
    assert level_error_db == pytest.approx(0, abs=0.5)
    assert level == pytest.approx(-6.0, abs=0.5)


def test_tuned_between_stations_the_level_is_below_squelch(fake: FakeRtlTcpServer) -> None:
    _, level = relay(fake.port, 99.0, 240_000, 0.2)
    assert level is not None
    assert level < -40


def test_a_neighbour_outside_the_channel_does_not_count() -> None:
    """960 kS/s, station 300 kHz from the one tuned: in the IQ, outside ±100 kHz."""
    with FakeRtlTcpServer([FakeStation(100.3e6, 1000.0)]) as server:
        _, level = relay(server.port, 100.0, 960_000, 0.2)
    assert level is not None
    assert level < -40


def u8_iq(samples: npt.NDArray[np.complex128]) -> npt.NDArray[np.uint8]:
    pairs = np.stack([samples.real, samples.imag], axis=-1).ravel()
    return np.clip(np.rint(127.5 + 127.5 * pairs), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("offset_hz", "tone_hz", "amplitude", "expected_dbfs"), [
    (0.0, 30_000.0, 0.999, 0.0),  # full-scale complex sinusoid in the channel
    (0.0, -90_000.0, 0.5, -6.0),
    (0.0, 150_000.0, 0.5, None),  # outside ±100 kHz of the station: only quantisation noise
    (240_000.0, 300_000.0, 0.1, -20.0),
])
def test_channel_power_per_hil(offset_hz: float, tone_hz: float, amplitude: float,
                               expected_dbfs: float | None) -> None:
    rate = 960_000
    n = np.arange(16384)
    iq = u8_iq(amplitude * np.exp(2j * np.pi * tone_hz * n / rate) + 0.05)  # + a DC offset
    level = WbfmDemodulator(rate, offset_hz=offset_hz).channel_power_dbfs(iq)
    if expected_dbfs is None:
        assert level < -50
    else:
        assert level == pytest.approx(expected_dbfs, abs=0.2)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="whole I/Q pairs"):
        WbfmDemodulator(240_000).process(bytes(3))
    with pytest.raises(ValueError, match="empty IQ block"):
        WbfmDemodulator(240_000).channel_power_dbfs(b"")
    with pytest.raises(ValueError, match="does not fit"):
        WbfmDemodulator(240_000, offset_hz=60_000)


def test_offset_choice() -> None:
    assert default_offset_hz(240_000) == 0
    assert default_offset_hz(960_000) == 240_000
    assert default_offset_hz(2_400_000) == 600_000


def test_demodulation_is_independent_of_block_boundaries() -> None:
    rate = 960_000
    n = np.arange(rate // 10)
    phase = 2 * np.pi * 240_000 * n / rate + 75_000 / 1000 * np.sin(2 * np.pi * 1000 * n / rate)
    iq = u8_iq(0.5 * np.exp(1j * phase))
    whole = WbfmDemodulator(rate).process(iq)
    demodulator = WbfmDemodulator(rate)
    cuts = 2 * np.sort(np.random.default_rng(7).integers(0, n.size, 25))
    blockwise = np.concatenate([demodulator.process(b) for b in np.split(iq, cuts)])
    np.testing.assert_allclose(blockwise, whole, atol=1e-4)


def test_rtl_fm_without_a_dongle_is_sdr_missing() -> None:
    receiver = RtlFmReceiver(gain_db=None, ppm=0)
    with pytest.raises(SdrMissing, match="No supported devices found"):
        receiver.start(100.0)
    receiver.stop()


def test_rtl_fm_not_installed_is_sdr_missing() -> None:
    receiver = RtlFmReceiver(gain_db=None, ppm=0, executable="/nonexistent/rtl_fm")
    with pytest.raises(SdrMissing, match="apt install rtl-sdr"):
        receiver.start(100.0)


def test_rtl_fm_command_line() -> None:
    assert RtlFmReceiver(gain_db=None, ppm=-2).command(100.5) == [
        "rtl_fm", "-M", "fm", "-f", "100500000", "-s", "200000", "-r", "48000", "-p", "-2", "-"]
    assert RtlFmReceiver(gain_db=28.0, ppm=0).command(88.0)[-3:] == ["-g", "28", "-"]
