"""`alsa:<pcm name>`: a real capture device (a USB audio adapter's mic/line input) through
pyalsaaudio (0.11).

Opened non-blocking with small periods (``period_frames``, 5 ms at 48 kHz) so that a block
reaches the agent as soon as the card has it: capture-to-card latency is what a speaker
hears of himself from the horns. Most USB adapters capture mono: name a PCM that converts
(``plughw:CARD=Device``, or the ``default`` plug), not a bare ``hw:``. An overrun (the
agent was late and the card's buffer filled) loses that audio; pyalsaaudio re-prepares the
stream and capture goes on, the loss counted in ``overruns``.
"""

from __future__ import annotations

import select
from typing import Self

import alsaaudio

from drivers.capture.base import CaptureError, LineCapture


class AlsaCapture(LineCapture):
    def __init__(self, pcm_name: str, rate: int, *, period_frames: int = 240,
                 periods: int = 4) -> None:
        super().__init__(rate)
        self.pcm_name = pcm_name
        self._period_frames = period_frames
        self._periods = periods
        self._pcm: alsaaudio.PCM | None = None
        self.overruns = 0

    @classmethod
    def from_target(cls, target: str, rate: int) -> Self:
        return cls(target, rate)

    def open(self) -> None:
        try:
            self._pcm = alsaaudio.PCM(
                type=alsaaudio.PCM_CAPTURE, mode=alsaaudio.PCM_NONBLOCK, device=self.pcm_name,
                channels=self.channels, rate=self.rate, format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self._period_frames, periods=self._periods)
        except alsaaudio.ALSAAudioError as error:
            raise CaptureError(
                f"alsa:{self.pcm_name}: cannot open the capture device: {error}. List the "
                "capture cards with `arecord -l` and the PCM names with `arecord -L`."
            ) from error

    def read(self, timeout: float) -> bytes:
        pcm = self._pcm
        if pcm is None:
            raise CaptureError(f"alsa:{self.pcm_name} is not open")
        try:
            length, data = pcm.read()
            if length == 0:
                poller = select.poll()
                for fd, mask in pcm.polldescriptors():
                    poller.register(fd, mask)
                if not poller.poll(timeout * 1000):
                    return b""
                length, data = pcm.read()
        except alsaaudio.ALSAAudioError as error:
            raise CaptureError(f"alsa:{self.pcm_name}: capture failed: {error}") from error
        if length < 0:
            self.overruns += 1
            return b""
        return bytes(data)

    def close(self) -> None:
        if self._pcm is not None:
            self._pcm.close()
            self._pcm = None
