"""drivers/sdr/fm_audio.py: the numpy de-emphasis is the bilinear first-order filter scipy
computes, block boundaries or not, and the shipped FM backend (rtl_fm) never imports scipy."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from drivers.sdr.fm_audio import Deemphasis

TAU_S = 50e-6


@pytest.mark.parametrize("rate", [48_000, 240_000, 480_000])
def test_deemphasis_is_scipys_bilinear_filter_across_any_blocks(rate: int) -> None:
    b, a = signal.bilinear([1.0], [TAU_S, 1.0], rate)
    audio = np.random.default_rng(rate).standard_normal(60_000).astype(np.float32)
    expected = signal.lfilter(b, a, audio.astype(np.float64))
    deemphasis = Deemphasis(rate, TAU_S)
    sizes = [1, 0, 7, 255, 256, 257, 1000, 8192] * 10
    bounds = np.cumsum([0, *sizes])
    pieces = [deemphasis.process(audio[start:end]) for start, end in itertools.pairwise(bounds)
              if start < audio.size]
    got = np.concatenate(pieces)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected[:got.size], atol=1e-6)


def test_a_tone_at_15_khz_is_attenuated_as_50_us_de_emphasis_says() -> None:
    rate, frequency = 48_000, 15_000.0
    tone = np.sin(2 * np.pi * frequency * np.arange(rate) / rate).astype(np.float32)
    out = Deemphasis(rate, TAU_S).process(tone)[rate // 2:]
    gain_db = 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2)) / np.sqrt(0.5))
    # The bilinear transform warps 15 kHz at 48 kHz: tan(pi f / fs) in place of pi f / fs.
    warped = 2 * rate * np.tan(np.pi * frequency / rate)
    assert gain_db == pytest.approx(-10 * np.log10(1 + (warped * TAU_S) ** 2), abs=0.05)


def test_the_shipped_fm_backend_never_imports_scipy() -> None:
    probe = ("import sys, drivers.sdr.rtl_fm, drivers.sdr.fm_audio;"
             "print('scipy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("backend", ["rtl_fm", "rtl_tcp"])
def test_relaying_keeps_one_blas_thread(backend: str) -> None:
    # OpenBLAS's idle workers spin: one per core would keep a second core busy while the
    # de-emphasis multiplies its small matrices (agent/__init__.py).
    probe = (f"import agent, os, numpy as np, drivers.sdr.{backend};"
             "from drivers.sdr.fm_audio import Deemphasis;"
             "Deemphasis(48_000, 50e-6).process(np.ones(48_000, np.float32));"
             "print(len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, env=env)
    assert result.stdout.strip() == "1"
