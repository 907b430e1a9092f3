"""Wideband FM demodulation of RTL-SDR IQ in numpy alone, block by block without seams (the
rtl_tcp backend; de-emphasis and levels: drivers/sdr/fm_audio.py; the filters:
drivers/dsp.py).

Pipeline (every stage carries its state across blocks):
  u8 IQ -> complex -> mix the station from ``offset_hz`` down to 0 Hz
  -> channel filter (±100 kHz) and integer decimation to 240-480 kHz
  -> quadrature discriminator -> de-emphasis (50 µs) -> 15 kHz low-pass and resampling
  to 48 kHz -> level: a deviation of 75 kHz maps to ``FULL_DEVIATION_DBFS``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from drivers.dsp import FloatArray, StreamingResampler, kaiser_lowpass
from drivers.sdr.fm_audio import LEVEL_PER_HZ, Deemphasis, to_stereo_s16le

ComplexArray = npt.NDArray[np.complex64]

CHANNEL_HALF_WIDTH_HZ = 100_000.0
AUDIO_PASSBAND_HZ = 15_000.0
# Nothing above 24 kHz may fold back into the audio; the stereo pilot (19 kHz, already ~36 dB
# down after de-emphasis) is left to the loudspeakers, which cannot reproduce it anyway.
AUDIO_STOPBAND_HZ = 24_000.0
INTERMEDIATE_MIN_RATE = 240_000  # channel filter transition 100 kHz -> rate - 100 kHz
OFF_CENTRE_MIN_RATE = 560_000  # below this, fs/4 leaves no guard band between DC and the channel
STOPBAND_ATTENUATION_DB = 50.0
MAX_MIXER_PERIOD = 1 << 16


def default_offset_hz(sample_rate: int) -> float:
    """Where the receiver puts the station in its IQ: fs/4 when that keeps the channel clear
    of the tuner's DC spike, else centred (at 240 kS/s there is no room to move)."""
    return sample_rate / 4 if sample_rate >= OFF_CENTRE_MIN_RATE else 0.0


def u8_to_complex(iq_u8: bytes | npt.NDArray[np.uint8]) -> ComplexArray:
    """Interleaved unsigned 8-bit IQ (centred on 127.5) -> complex64 with full scale 1.0."""
    raw = np.frombuffer(iq_u8, dtype=np.uint8)
    if raw.size % 2:
        raise ValueError("IQ block must hold whole I/Q pairs")
    floats = raw.astype(np.float32)
    floats -= np.float32(127.5)
    floats *= np.float32(1 / 127.5)
    return floats.view(np.complex64)


class WbfmDemodulator:
    """Demodulates u8 IQ blocks at ``sample_rate`` into float audio at ``audio_rate``.

    ``offset_hz`` is where the station sits in the IQ (tuned centre = station - offset);
    None picks ``default_offset_hz``. Not thread-safe.
    """

    def __init__(
        self,
        sample_rate: int,
        audio_rate: int = 48_000,
        deemphasis_s: float = 50e-6,
        offset_hz: float | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.audio_rate = audio_rate
        self.offset_hz = default_offset_hz(sample_rate) if offset_hz is None else offset_hz
        if abs(self.offset_hz) + CHANNEL_HALF_WIDTH_HZ > sample_rate / 2:
            raise ValueError(f"a station at {self.offset_hz:+.0f} Hz does not fit in "
                             f"{sample_rate} S/s")
        self._mixer = _Mixer(sample_rate, self.offset_hz)
        decimation = max(1, sample_rate // INTERMEDIATE_MIN_RATE)
        self.intermediate_rate = sample_rate / decimation
        # Undecimated (240-479 kS/s) the dongle's own decimating filter is the channel filter;
        # otherwise keep what decimation would fold back out of the ±100 kHz channel.
        self._channel = None if decimation == 1 else StreamingResampler(
            kaiser_lowpass(sample_rate, CHANNEL_HALF_WIDTH_HZ,
                           self.intermediate_rate - CHANNEL_HALF_WIDTH_HZ,
                           STOPBAND_ATTENUATION_DB), 1, decimation, channels=2)
        self._previous = np.complex64(0)
        self._deemphasis = Deemphasis(self.intermediate_rate, deemphasis_s)
        self._power_size = 0
        self._power_weights_cache = self._power_weights(1)
        ratio = Fraction(audio_rate * decimation, sample_rate).limit_denominator(10_000)
        audio_taps = kaiser_lowpass(self.intermediate_rate * ratio.numerator, AUDIO_PASSBAND_HZ,
                                    AUDIO_STOPBAND_HZ, STOPBAND_ATTENUATION_DB)
        # radians/sample -> Hz of deviation -> output level; `up` zero-stuffing loses `up`.
        scale = self.intermediate_rate / (2 * math.pi) * LEVEL_PER_HZ * ratio.numerator
        self._audio = StreamingResampler((audio_taps * scale).astype(np.float32),
                                         ratio.numerator, ratio.denominator)

    def process(self, iq_u8: bytes | npt.NDArray[np.uint8]) -> FloatArray:
        """Mono audio in [-1, 1] (clipped) for one block of interleaved u8 IQ."""
        baseband = self._mixer.mix(u8_to_complex(iq_u8))
        if self._channel is not None:
            pairs = self._channel.process(baseband.view(np.float32).reshape(-1, 2))
            baseband = np.ascontiguousarray(pairs).view(np.complex64).ravel()
        if baseband.size == 0:
            return np.zeros(0, dtype=np.float32)
        shifted = np.concatenate(([self._previous], baseband))
        self._previous = baseband[-1]
        discriminated = np.angle(shifted[1:] * np.conj(shifted[:-1])).astype(np.float32)
        audio = self._audio.process(self._deemphasis.process(discriminated))
        return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)

    def stereo_s16le(self, iq_u8: bytes | npt.NDArray[np.uint8]) -> bytes:
        """:meth:`process`, as the receiver's interleaved s16le stereo."""
        return to_stereo_s16le(self.process(iq_u8))

    def channel_power_dbfs(self, iq_u8: bytes | npt.NDArray[np.uint8]) -> float:
        """hil.md signal level: power within ±100 kHz of the station, DC removed, relative to a
        full-scale complex sinusoid, in dB."""
        samples = u8_to_complex(iq_u8)
        if samples.size == 0:
            raise ValueError("empty IQ block")
        window, in_channel, normaliser = self._power_weights(samples.size)
        spectrum = np.fft.fft((samples - samples.mean()) * window)
        power = float(np.sum(np.abs(spectrum[in_channel]) ** 2)) / normaliser
        return 10 * math.log10(max(power, 1e-20))


    def _power_weights(self, size: int) -> tuple[FloatArray, npt.NDArray[np.bool_], float]:
        """Hann window, channel bins, and Parseval normaliser for an FFT of ``size``."""
        if self._power_size != size:
            window = np.hanning(size).astype(np.float32)
            freqs = np.fft.fftfreq(size, 1 / self.sample_rate)
            self._power_weights_cache = (
                window, np.abs(freqs - self.offset_hz) <= CHANNEL_HALF_WIDTH_HZ,
                size * float(np.sum(window.astype(np.float64) ** 2)))
            self._power_size = size
        return self._power_weights_cache


class _Mixer:
    """Multiplies by exp(-j 2π offset n / fs) from a one-period table, phase carried."""

    def __init__(self, sample_rate: int, offset_hz: float) -> None:
        fraction = Fraction(offset_hz / sample_rate).limit_denominator(MAX_MIXER_PERIOD)
        if abs(float(fraction) * sample_rate - offset_hz) > 1.0:
            raise ValueError(f"offset {offset_hz} Hz is not a simple fraction of {sample_rate}")
        self._period = fraction.denominator
        n = np.arange(self._period)
        self._table = np.exp(-2j * np.pi * fraction.numerator * n / self._period).astype(
            np.complex64)
        self._tiled = self._table
        self._phase = 0
        self._identity = fraction.numerator == 0

    def mix(self, samples: ComplexArray) -> ComplexArray:
        if self._identity:
            return samples
        needed = self._phase + samples.size
        if self._tiled.size < needed:
            self._tiled = np.tile(self._table, needed // self._period + 1)
        mixed: ComplexArray = samples * self._tiled[self._phase : needed]
        self._phase = needed % self._period
        return mixed

