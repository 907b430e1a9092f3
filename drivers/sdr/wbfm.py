"""Wideband FM demodulation of RTL-SDR IQ in numpy alone, block by block without seams (the
rtl_tcp backend; de-emphasis and levels: drivers/sdr/fm_audio.py). The filters are
designed and applied here rather than by scipy.signal: its import alone took 0.8 s and
63 MB of the agent (issue 10), for two textbook formulas and one polyphase loop, which the
tests check against scipy's own.

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
from numpy.lib.stride_tricks import sliding_window_view

from drivers.sdr.fm_audio import LEVEL_PER_HZ, Deemphasis, FloatArray, to_stereo_s16le

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


class StreamingResampler:
    """A FIR filter with ``up``-fold zero stuffing before it and ``down``-fold decimation after
    it (``scipy.signal.upfirdn`` along axis 0), over a stream of float32 blocks: output
    equals filtering the concatenated stream at once. Complex data goes through as (n, 2)
    float pairs. Polyphase: each output sums only the taps that meet real input samples,
    ``up`` matrix products per block."""

    def __init__(self, taps: FloatArray, up: int, down: int, channels: int = 1) -> None:
        if math.gcd(up, down) != 1:
            raise ValueError("up/down must be coprime")
        self._up = up
        self._down = down
        # Phase p's taps h[p], h[p + up], ..., newest input last: phases[p] @ window.
        self._phase_len = -(-len(taps) // up)
        padded = np.zeros(self._phase_len * up, dtype=np.float32)
        padded[:len(taps)] = taps
        self._phases = padded.reshape(self._phase_len, up).T[:, ::-1].copy()
        self._next_output = 0  # absolute index of the next output sample
        self._buffer_start = self._history_start()  # absolute input index of _buffer[0]
        shape = (-self._buffer_start,) if channels == 1 else (-self._buffer_start, channels)
        self._buffer = np.zeros(shape, dtype=np.float32)

    def _history_start(self) -> int:
        """The earliest input the next output needs."""
        return (self._next_output * self._down) // self._up - (self._phase_len - 1)

    def process(self, block: FloatArray) -> FloatArray:
        buffer = np.concatenate((self._buffer, block))
        last_output = ((self._buffer_start + len(buffer) - 1) * self._up) // self._down
        count = last_output - self._next_output + 1
        if count <= 0:
            self._buffer = buffer
            return buffer[:0]
        out = self._filter(buffer, count)
        self._next_output += count
        new_start = self._history_start()
        self._buffer = buffer[new_start - self._buffer_start :]
        self._buffer_start = new_start
        return out

    def _filter(self, buffer: FloatArray, count: int) -> FloatArray:
        """Outputs ``_next_output`` onwards, ``count`` of them, from ``buffer``."""
        windows = sliding_window_view(buffer, self._phase_len, axis=0)  # (n, [channels,] L)
        out = np.empty((count, *buffer.shape[1:]), dtype=np.float32)
        # Outputs offset, offset + up, ... share a phase; their windows step by `down`.
        for offset in range(min(self._up, count)):
            t = (self._next_output + offset) * self._down
            first = t // self._up - self._buffer_start - (self._phase_len - 1)
            n = len(range(offset, count, self._up))
            rows = windows[first : first + self._down * (n - 1) + 1 : self._down]
            out[offset :: self._up] = rows @ self._phases[t % self._up]
        return out


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
            _lowpass(sample_rate, CHANNEL_HALF_WIDTH_HZ,
                     self.intermediate_rate - CHANNEL_HALF_WIDTH_HZ), 1, decimation, channels=2)
        self._previous = np.complex64(0)
        self._deemphasis = Deemphasis(self.intermediate_rate, deemphasis_s)
        self._power_size = 0
        self._power_weights_cache = self._power_weights(1)
        ratio = Fraction(audio_rate * decimation, sample_rate).limit_denominator(10_000)
        audio_taps = _lowpass(self.intermediate_rate * ratio.numerator, AUDIO_PASSBAND_HZ,
                              AUDIO_STOPBAND_HZ)
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


def _lowpass(rate: float, passband_hz: float, stopband_hz: float) -> npt.NDArray[np.float32]:
    """Kaiser-window FIR: flat to ``passband_hz``, STOPBAND_ATTENUATION_DB from ``stopband_hz``
    (the taps of ``scipy.signal.kaiserord`` and ``firwin``: Kaiser's length and beta, a
    windowed sinc cut off midway, scaled to unity gain at DC)."""
    attenuation = STOPBAND_ATTENUATION_DB
    width = (stopband_hz - passband_hz) / (rate / 2)
    numtaps = math.ceil((attenuation - 7.95) / 2.285 / (math.pi * width) + 1) | 1
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation > 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    cutoff = (passband_hz + stopband_hz) / rate  # of the Nyquist frequency
    centred = np.arange(numtaps) - (numtaps - 1) / 2
    taps = cutoff * np.sinc(cutoff * centred) * np.kaiser(numtaps, beta)
    result: FloatArray = (taps / taps.sum()).astype(np.float32)
    return result
