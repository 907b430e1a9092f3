"""The dropout detectors of the load test and bench (tests/support/load.py), on a capture
made here: a tone with gaps the card's underrun padding would leave; and the wake probe
that tells the machine's stalls (tests/support/wake_probe.py), stopped for 50 ms."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from tests.support.load import silent_windows, zero_runs
from tests.support.wake_probe import WakeProbe
from tests.support.wavfile import Capture

RATE = 48_000


def test_a_gap_shorter_than_a_window_is_found_by_its_digital_zeros() -> None:
    t = np.arange(RATE) / RATE
    tone = (16000 * np.sin(2 * np.pi * 550 * t)).astype(np.int16)
    samples = np.stack([tone, tone], axis=1)
    samples[12_000:12_130] = 0  # 2.7 ms: no whole 5 ms window
    samples[30_000:30_040] = 0  # under 1 ms: below the bound
    samples[40_000:40_480] = 0  # 10 ms
    capture = Capture(samples, RATE, 1000.0)
    assert zero_runs(capture, 1000.0, 1.0, 48) == [(1000.25, 130), (1000.0 + 40_000 / RATE, 480)]
    # The 5 ms windows are counted from the start: only one lies wholly in the 10 ms gap.
    assert silent_windows(capture, 1000.0, 1.0) == [1000.0 + 40_080 / RATE]


def test_the_wake_probe_sees_its_process_held_off_the_cpu() -> None:
    with WakeProbe(0.005) as probe:
        time.sleep(0.2)
        os.kill(probe.pid, signal.SIGSTOP)  # as a stalled machine would hold it
        stopped_at = time.time()
        time.sleep(0.05)
        os.kill(probe.pid, signal.SIGCONT)
        time.sleep(0.2)
    assert probe.realtime  # the tests run as root
    assert len(probe.late_s) > 40
    assert probe.worst_near(stopped_at) > 0.03
    assert probe.worst_near(stopped_at - 10) == 0  # nothing then: no stall to tell
