"""The agent's volume curve and the mixers."""

from __future__ import annotations

import itertools
import math

import pytest

from drivers.mixer import MixerError, open_mixer
from drivers.mixer.alsa import control_centibels
from drivers.mixer.curve import effective_volume, volume_to_db, volume_to_gain
from drivers.mixer.software import SoftwareMixer


def test_curve_end_points_and_middle() -> None:
    assert volume_to_gain(0) == 0.0
    assert volume_to_db(0) == -math.inf
    assert volume_to_gain(100) == 1.0
    assert volume_to_db(1) == -40.0
    assert volume_to_gain(1) == pytest.approx(0.01)
    assert volume_to_db(50) == pytest.approx(-20.2, abs=0.1)
    assert 20 * math.log10(volume_to_gain(50)) == pytest.approx(volume_to_db(50))


def test_curve_is_strictly_monotonic_with_even_db_steps() -> None:
    gains = [volume_to_gain(v) for v in range(101)]
    assert all(a < b for a, b in itertools.pairwise(gains))
    steps = {round(volume_to_db(v + 1) - volume_to_db(v), 9) for v in range(1, 100)}
    assert steps == {round(40 / 99, 9)}


@pytest.mark.parametrize("volume", [-1, 101])
def test_curve_rejects_out_of_range_volumes(volume: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        volume_to_gain(volume)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        volume_to_db(volume)


def test_effective_volume_scales_master_by_program() -> None:
    assert effective_volume(70, 100) == 70
    assert effective_volume(70, 80) == 56
    assert effective_volume(75, 50) == 38  # 37.5 rounds half up
    assert effective_volume(100, 0) == 0
    with pytest.raises(ValueError, match="program volume"):
        effective_volume(70, 120)
    with pytest.raises(ValueError, match="master volume"):
        effective_volume(-5, 50)


def test_software_mixer_applies_the_curve_and_keeps_level_on_bad_input() -> None:
    mixer = open_mixer(None)
    assert isinstance(mixer, SoftwareMixer)
    assert mixer.hardware is False
    assert mixer.software_gain() == 1.0
    mixer.set_volume(50)
    assert mixer.software_gain() == volume_to_gain(50)
    with pytest.raises(ValueError):
        mixer.set_volume(150)
    assert mixer.software_gain() == volume_to_gain(50)
    mixer.set_volume(0)
    assert mixer.software_gain() == 0.0


def test_hardware_mapping_follows_the_curve_within_the_control_range() -> None:
    assert control_centibels(100, floor=-10_350, top=400) == 0  # never boost past 0 dB
    assert control_centibels(50, floor=-10_350, top=400) == round(volume_to_db(50) * 100)
    assert control_centibels(1, floor=-10_350, top=400) == -4000
    assert control_centibels(1, floor=-3000, top=0) == -3000  # the control's floor
    assert control_centibels(0, floor=-10_350, top=400) == -10_350
    assert control_centibels(100, floor=-6000, top=-600) == -600  # a control below unity
    assert control_centibels(1, floor=-6000, top=-600) == -4600


def test_alsa_mixer_on_a_missing_card_fails_naming_card_and_control() -> None:
    with pytest.raises(MixerError, match=r"'PCM' on card 3.*amixer -c 3 scontrols"):
        open_mixer({"card": 3, "control": "PCM"})


@pytest.mark.parametrize("config", [{"card": "0", "control": "PCM"}, {"card": 0}, {}])
def test_open_mixer_rejects_malformed_config(config: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"audio\.mixer needs"):
        open_mixer(config)
