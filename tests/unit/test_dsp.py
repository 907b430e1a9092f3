"""The streaming FIR resampler and the Kaiser low-pass design (drivers/dsp.py), against
scipy.signal's own."""

import numpy as np
import pytest
from scipy import signal

from drivers.dsp import StreamingResampler, kaiser_lowpass


@pytest.mark.parametrize(("up", "down", "channels"),
                         [(1, 4, 2), (1, 5, 1), (3, 16, 1), (6, 25, 1), (2, 3, 2), (5, 1, 1),
                          (40, 147, 1)])
def test_streaming_resampler_matches_one_shot_filtering(up: int, down: int, channels: int) -> None:
    rng = np.random.default_rng(up * 100 + down)
    taps = signal.firwin(61, 0.8 / max(up, down)).astype(np.float32)
    shape = (5000,) if channels == 1 else (5000, channels)
    stream = rng.standard_normal(shape).astype(np.float32)
    # output k needs input k*down/up: the stream yields outputs up to (5000 - 1) * up // down
    whole = signal.upfirdn(taps, stream, up, down, axis=0)[: (5000 - 1) * up // down + 1]
    resampler = StreamingResampler(taps, up, down, channels)
    cuts = np.sort(rng.integers(0, 5000, 40))
    pieces = [resampler.process(block) for block in np.split(stream, cuts)]
    blockwise = np.concatenate(pieces)
    assert blockwise.shape[0] == whole.shape[0]
    assert resampler.next_output == whole.shape[0]
    np.testing.assert_allclose(blockwise, whole, atol=1e-5)


@pytest.mark.parametrize(("up", "down", "channels"), [(1, 4, 1), (40, 147, 1), (2, 3, 2)])
def test_a_restarted_resampler_is_a_new_one(up: int, down: int, channels: int) -> None:
    rng = np.random.default_rng(7)
    taps = signal.firwin(61, 0.8 / max(up, down)).astype(np.float32)
    shape = (3001,) if channels == 1 else (3001, channels)
    first, second = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    restarted = StreamingResampler(taps, up, down, channels)
    restarted.process(first)
    restarted.restart()
    assert restarted.next_output == 0
    fresh = StreamingResampler(taps, up, down, channels)
    np.testing.assert_array_equal(restarted.process(second), fresh.process(second))
    assert restarted.input_position(0) == fresh.input_position(0)


@pytest.mark.parametrize(("up", "down"), [(1, 4), (40, 147), (3, 2)])
def test_an_output_is_placed_where_its_taps_centre_on_the_input(up: int, down: int) -> None:
    taps = kaiser_lowpass(48_000 * up, 4_000, 8_000, 50.0) * np.float32(up)
    resampler = StreamingResampler(taps, up, down)
    pulse_at = 1234
    stream = np.zeros(4000, np.float32)
    stream[pulse_at] = 1.0
    out = resampler.process(stream)
    peak = int(np.argmax(out))
    # The peak is the output nearest the pulse: within half an output's spacing of it.
    assert abs(resampler.input_position(peak) - pulse_at) <= down / up / 2


@pytest.mark.parametrize(("rate", "passband_hz", "stopband_hz", "attenuation_db"), [
    (240_000, 15_000, 24_000, 50.0),  # FM: the audio filter, undecimated
    (1_024_000, 100_000, 156_000, 50.0),  # FM: the channel filter before decimating by 4
    (48_000, 4_500, 7_500, 50.0),  # the recorder, from a 48 kHz card
    (1_764_000, 4_500, 7_500, 50.0),  # the recorder, from 44.1 kHz through 40/147
    (48_000, 4_500, 7_500, 70.0),  # Kaiser's beta above 50 dB
    (48_000, 4_500, 7_500, 30.0),  # ... between 21 and 50 dB
    (48_000, 4_500, 7_500, 20.0),  # ... below 21 dB: a plain sinc
])
def test_lowpass_taps_are_scipys_kaiser_design(rate: int, passband_hz: float,
                                               stopband_hz: float,
                                               attenuation_db: float) -> None:
    numtaps, beta = signal.kaiserord(attenuation_db, (stopband_hz - passband_hz) / (rate / 2))
    expected = signal.firwin(numtaps | 1, (passband_hz + stopband_hz) / 2,
                             window=("kaiser", beta), fs=rate)
    np.testing.assert_allclose(kaiser_lowpass(rate, passband_hz, stopband_hz, attenuation_db),
                               expected, atol=1e-7)
