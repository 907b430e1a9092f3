"""Item preparation: what an item needs before the engine can play it, its voice.

The :class:`Preparer` gives a :class:`Playback` its voice: a decoder of its media, stream
or text, or a lease on the tuner or the line input, at the gain of its activation. It runs
on the control thread and never waits: decoders start in their own processes, texts are
rendered by the tts thread, the tuner retunes on the fm thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from agent.control.playback import LevelMeter, Playback
from agent.control.state import ControlState
from agent.core.arbiter import Activation, Item
from agent.core.clock import Clock
from agent.playout.decoder import Decoders
from agent.playout.fm_tuner import TunerLease
from agent.playout.line_in import LineInLease
from agent.playout.sources import StreamSource
from agent.playout.tts import Speech
from agent.playout.voice import Voice
from drivers.mixer.base import Mixer
from drivers.mixer.curve import effective_volume, volume_to_gain


class MediaLookup(Protocol):
    def path(self, sha256: str) -> Path | None: ...

    def duration_s(self, sha256: str) -> float | None: ...

    def pin(self, sha256: str) -> Path | None: ...

    def unpin(self, sha256: str) -> None: ...


class FmTunerLike(Protocol):
    def acquire(self, frequency_mhz: float) -> TunerLease: ...

    def busy_elsewhere(self, frequency_mhz: float) -> bool: ...


class LineInputLike(Protocol):
    def acquire(self) -> LineInLease: ...


class ItemUnavailable(Exception):
    """The item cannot be played now (media not cached, no tuner, no line input)."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault


class Preparer:
    def __init__(self, state: ControlState, *, clock: Clock, decoders: Decoders,
                 media: MediaLookup, tts: Speech, tuner: FmTunerLike | None,
                 line_in: LineInputLike | None, mixer: Mixer) -> None:
        self._state = state
        self._clock = clock
        self._decoders = decoders
        self._media = media
        self._tts = tts
        self._tuner = tuner
        self._line_in = line_in
        self._mixer = mixer

    def prepare(self, pb: Playback) -> None:
        """Give ``pb`` its voice: a decoder, or the tuner. Raises ItemUnavailable."""
        item = pb.item
        if item.kind in ("fm", "line_in"):
            pb.lease = self._lease_tuner(float(item.ref)) if item.kind == "fm" \
                else self._lease_line_in()
            pb.voice = Voice(f"{item.kind}:{pb.activation.key}", pb.lease,
                             self.gain(pb.activation), tag=pb)
            return
        if item.kind == "media":
            pb.mrl, pb.sha256 = self._media_path(item.ref)
        elif item.kind != "tts":
            pb.mrl = item.ref
        self.open_decoder(pb, pb.offset_s)

    def preparable(self, item: Item) -> bool:
        """Whether the item can be cued now: its media is in the cache, or the tuner is
        free for its station (a cue must not retune under the station still on air)."""
        if item.kind == "fm":
            return self._tuner is not None and not self._tuner.busy_elsewhere(float(item.ref))
        if item.kind == "line_in":
            return self._line_in is not None
        if item.kind != "media" or item.ref.startswith(("http://", "https://", "file://")):
            return True
        entry = self._state.media_entry(item.ref)
        return entry is not None and self._media.path(entry.sha256) is not None

    def _media_path(self, ref: str) -> tuple[str, str]:
        """(path or URL, sha256) of a media id of the schedule, or a URL."""
        if ref.startswith(("http://", "https://", "file://")):
            return ref, ""
        entry = self._state.media_entry(ref)
        path = self._media.pin(entry.sha256) if entry is not None else None
        if entry is None or path is None:
            raise ItemUnavailable("media_missing", f"media {ref} is not cached")
        return str(path), entry.sha256

    def open_decoder(self, pb: Playback, position_s: float) -> None:
        """Give ``pb`` a voice decoding its item from ``position_s``; a text is spoken
        once the tts thread has rendered it."""
        if pb.item.kind == "tts":
            pb.stream = self._tts.speak(
                pb.item.ref, pb.item.lang,
                lambda path: self._decoders.open(str(path), position_s, 0))
        else:
            assert pb.mrl is not None
            caching = self._state.settings.stream_caching_ms if pb.item.kind == "stream" else 0
            pb.stream = self._decoders.open(pb.mrl, position_s, caching)
        source: Any = StreamSource(pb.stream)
        if pb.item.kind == "stream":
            pb.meter = LevelMeter(source, self._clock, self._state.settings.dead_air_dbfs)
            source = pb.meter
        if pb.voice is not None:
            pb.retired_voices.append(pb.voice)
        pb.voice = Voice(f"{pb.item.kind}:{pb.activation.key}#{pb.index}", source,
                         self.gain(pb.activation), tag=pb)

    def _lease_tuner(self, frequency_mhz: float) -> TunerLease:
        if self._tuner is None:
            raise ItemUnavailable("sdr_missing", "no FM receiver is configured (fm.backend)")
        return self._tuner.acquire(frequency_mhz)

    def _lease_line_in(self) -> LineInLease:
        if self._line_in is None:
            raise ItemUnavailable("line_in_failed", "no line input is configured "
                                  "(line_in.input)")
        return self._line_in.acquire()

    def level(self, activation: Activation) -> int:
        """The volume (0-100) the activation plays at."""
        if activation.absolute_volume and activation.volume is not None:
            return activation.volume
        return effective_volume(self._state.master_volume, 100 if activation.volume is None
                                else activation.volume)

    def gain(self, activation: Activation) -> float:
        level = self.level(activation)
        if self._mixer.hardware:
            self._mixer.set_volume(level)
            return 1.0
        return volume_to_gain(level)
