"""`audio.mixer: {card: N, control: NAME}`: the level is set on an ALSA mixer control.

Our 0..100 follows the same dB curve as the software gain (drivers/mixer/curve.py): 100 is
the top of the control or 0 dB, whichever is lower (never boost into clipping), and each
step below it is the curve's dB step, down to the control's floor. 0 mutes with the
control's switch when it has one, else goes to the floor. A control without dB
information gets the curve's linear gain as a percentage of its raw range instead.
"""

from __future__ import annotations

from typing import Self

import alsaaudio

from drivers.mixer.base import Mixer, MixerControl, MixerError
from drivers.mixer.curve import volume_to_db, volume_to_gain

CENTIBELS_PER_DB = 100  # ALSA's dB values are in hundredths of a dB


def control_centibels(volume: int, floor: int, top: int) -> int:
    """The control setting (hundredths of a dB) for ``volume`` on a control spanning
    ``floor``..``top``."""
    db = volume_to_db(volume)
    if volume == 0:
        return floor
    return max(floor, round(min(top, 0) + db * CENTIBELS_PER_DB))


class AlsaMixer(Mixer):
    def __init__(self, card: int, control: str) -> None:
        self._where = f"ALSA mixer control {control!r} on card {card}"
        try:
            self._mixer = alsaaudio.Mixer(control=control, cardindex=card)
            if not any("Playback" in cap or cap == "Volume" for cap in self._mixer.volumecap()):
                raise MixerError(f"{self._where} has no playback volume")
            self._has_switch = bool(self._mixer.switchcap())
            self._db_range = self._read_db_range()
        except alsaaudio.ALSAAudioError as error:
            raise MixerError(
                f"{self._where}: {error}. List the cards with `aplay -l` and the controls "
                f"with `amixer -c {card} scontrols`."
            ) from error

    @classmethod
    def from_control(cls, control: MixerControl | None) -> Self:
        if control is None:
            raise ValueError("the ALSA mixer needs audio.mixer {card, control}")
        return cls(control.card, control.control)

    def _read_db_range(self) -> tuple[int, int] | None:
        try:
            low, high = self._mixer.getrange(units=alsaaudio.VOLUME_UNITS_DB)
        except alsaaudio.ALSAAudioError:
            return None
        return (int(low), int(high)) if low < high else None

    @property
    def hardware(self) -> bool:
        return True

    def set_volume(self, volume: int) -> None:
        gain = volume_to_gain(volume)  # validates the volume before touching the card
        try:
            if self._has_switch:
                self._mixer.setmute(volume == 0)
            if self._db_range is None:
                self._mixer.setvolume(round(gain * 100))
                return
            target = control_centibels(volume, *self._db_range)
            self._mixer.setvolume(target, units=alsaaudio.VOLUME_UNITS_DB)
        except alsaaudio.ALSAAudioError as error:
            raise MixerError(f"{self._where}: cannot set volume {volume}: {error}") from error

    def software_gain(self) -> float:
        return 1.0
