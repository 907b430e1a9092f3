"""Streaming FIR filtering and resampling in numpy alone, block by block without seams:
the FM demodulator's filters (drivers/sdr/wbfm.py) and the off-air recorder's decimation
to 12 kHz (agent/recording/recorder.py). Designed and applied here rather than by
scipy.signal, whose import alone took 0.8 s and 63 MB of the agent (issue 10), for two
textbook formulas and one polyphase loop; the tests check both against scipy's own.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float32]


def kaiser_lowpass(rate: float, passband_hz: float, stopband_hz: float,
                   attenuation_db: float) -> FloatArray:
    """Kaiser-window FIR: flat to ``passband_hz``, ``attenuation_db`` down from
    ``stopband_hz`` (the taps of ``scipy.signal.kaiserord`` and ``firwin``: Kaiser's length
    and beta, a windowed sinc cut off midway, scaled to unity gain at DC). Odd length, so
    symmetric about its middle tap."""
    width = (stopband_hz - passband_hz) / (rate / 2)
    numtaps = math.ceil((attenuation_db - 7.95) / 2.285 / (math.pi * width) + 1) | 1
    if attenuation_db > 50:
        beta = 0.1102 * (attenuation_db - 8.7)
    elif attenuation_db > 21:
        beta = 0.5842 * (attenuation_db - 21) ** 0.4 + 0.07886 * (attenuation_db - 21)
    else:
        beta = 0.0
    cutoff = (passband_hz + stopband_hz) / rate  # of the Nyquist frequency
    centred = np.arange(numtaps) - (numtaps - 1) / 2
    taps = cutoff * np.sinc(cutoff * centred) * np.kaiser(numtaps, beta)
    result: FloatArray = (taps / taps.sum()).astype(np.float32)
    return result


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
        self._taps_len = len(taps)
        # Phase p's taps h[p], h[p + up], ..., newest input last: phases[p] @ window.
        self._phase_len = -(-len(taps) // up)
        padded = np.zeros(self._phase_len * up, dtype=np.float32)
        padded[:len(taps)] = taps
        self._phases = padded.reshape(self._phase_len, up).T[:, ::-1].copy()
        self._channels = channels
        self.restart()

    def restart(self) -> None:
        """Begin a new stream: the next input is its first, with silence before it."""
        self._next_output = 0  # absolute index of the next output sample
        self._buffer_start = self._history_start()  # absolute input index of _buffer[0]
        shape = (-self._buffer_start,) if self._channels == 1 \
            else (-self._buffer_start, self._channels)
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
        # Decimating by more than the taps per phase, the next output may need nothing yet
        # received: the buffer then starts at the next input to come, not beyond it.
        new_start = min(self._history_start(), self._buffer_start + len(buffer))
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

    @property
    def next_output(self) -> int:
        """Index of the next output sample, counted from the first."""
        return self._next_output

    def input_position(self, output: int) -> float:
        """Where output sample ``output`` sits on the input's time line, in input samples
        from the first: the centre of its taps, for a symmetric (linear-phase) filter."""
        return (output * self._down - (self._taps_len - 1) / 2) / self._up
