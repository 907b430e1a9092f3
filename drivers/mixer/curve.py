"""The agent's own volume curve (docs/audio.md).

libvlc's volume is cubic and only applies once playback has started, so the agent maps its
0..100 volumes to gain itself: 0 is mute; 1..100 are spaced evenly in dB from −40 dB at 1
to 0 dB at 100, so each step is the same audible change (about 0.4 dB).
"""

from __future__ import annotations

import math

MIN_DB = -40.0


def _check_volume(volume: int, name: str = "volume") -> None:
    if not 0 <= volume <= 100:
        raise ValueError(f"{name} must be 0..100, got {volume}")


def volume_to_db(volume: int) -> float:
    """Gain in dB for ``volume``; −inf for 0 (mute)."""
    _check_volume(volume)
    if volume == 0:
        return -math.inf
    return -MIN_DB * (volume - 100) / 99


def volume_to_gain(volume: int) -> float:
    """Linear factor for ``volume``: 0.0 for 0, 0.01 for 1, 1.0 for 100."""
    if volume == 0:
        _check_volume(volume)
        return 0.0
    return float(10 ** (volume_to_db(volume) / 20))


def effective_volume(master: int, program: int) -> int:
    """master × program / 100, rounded half up (source-api.md)."""
    _check_volume(master, "master volume")
    _check_volume(program, "program volume")
    return (master * program + 50) // 100
