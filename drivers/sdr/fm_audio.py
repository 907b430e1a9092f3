"""What both FM backends do to demodulated audio, in numpy alone (scipy, which added 63 MB
to the agent, is not a dependency: issue 10): the deviation-to-level scale, 50 µs
de-emphasis, and s16le stereo out. The ``rtl_fm`` backend (the shipped default) needs
nothing more; ``rtl_tcp``'s own demodulator (drivers/sdr/wbfm.py) filters the IQ first.
"""

from __future__ import annotations

import numpy as np

from drivers.dsp import FloatArray

RATED_DEVIATION_HZ = 75_000.0
FULL_DEVIATION_DBFS = -3.0  # 3 dB of headroom for over-deviating stations, then clipping
LEVEL_PER_HZ = 10 ** (FULL_DEVIATION_DBFS / 20) / RATED_DEVIATION_HZ  # output per Hz of deviation
_BLOCK = 256  # samples the de-emphasis solves at once


class Deemphasis:
    """First-order de-emphasis 1/(1 + s·tau) by the bilinear transform, state carried
    across blocks: y[n] = g·(x[n] + x[n-1]) + p·y[n-1].

    The recursion is solved a block of ``_BLOCK`` samples at a time as one matrix
    product (each block's response from rest) plus the decaying response to the state
    it starts from, which numpy does at C speed where a per-sample loop would not keep
    up with the audio."""

    def __init__(self, rate: float, tau_s: float) -> None:
        k = 2 * rate * tau_s
        self._gain = 1 / (1 + k)
        pole = (k - 1) / (k + 1)
        lags = np.arange(_BLOCK)
        steps = lags[:, None] - lags[None, :]
        self._from_rest = np.where(steps >= 0, pole ** np.maximum(steps, 0), 0.0).T
        self._decay = pole ** (lags + 1)  # the previous output's share in each sample
        self._block_decay = pole ** _BLOCK
        self._x_prev = 0.0
        self._y_prev = 0.0

    def process(self, audio: FloatArray) -> FloatArray:
        n = audio.size
        if n == 0:
            return audio.astype(np.float32, copy=True)
        x = audio.astype(np.float64)
        drive = np.empty(-(-n // _BLOCK) * _BLOCK)
        drive[:n] = x
        drive[1:n] += x[:-1]
        drive[0] += self._x_prev
        drive[n:] = 0.0
        drive *= self._gain
        blocks = drive.reshape(-1, _BLOCK) @ self._from_rest
        starts = np.empty(blocks.shape[0])
        carried = self._y_prev
        for index, last in enumerate(blocks[:, -1]):
            starts[index] = carried
            carried = last + self._block_decay * carried
        out = (blocks + starts[:, None] * self._decay).ravel()[:n]
        self._x_prev = float(x[-1])
        self._y_prev = float(out[-1])
        result: FloatArray = out.astype(np.float32)
        return result

    def stereo_from_s16(self, data: bytes, hz_per_unit: float) -> bytes:
        """Discriminator output as s16le (``hz_per_unit`` of deviation each), de-emphasised,
        as interleaved s16le stereo audio."""
        units = np.frombuffer(data, dtype="<i2").astype(np.float32)
        return to_stereo_s16le(self.process(units * (LEVEL_PER_HZ * hz_per_unit)))


def to_stereo_s16le(audio: FloatArray) -> bytes:
    """Mono float audio in [-1, 1] -> interleaved s16le stereo (mono duplicated)."""
    mono = np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return np.repeat(mono, 2).tobytes()
