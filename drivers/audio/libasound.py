"""The few calls of alsa-lib's PCM playback API the ALSA output needs, through ctypes.

pyalsaaudio (0.11) does not offer ``snd_pcm_rewindable`` and ``snd_pcm_rewind``, with which
a card gives back what it holds and has not yet played (AudioOutput.rewind): so the output
speaks to libasound itself. Every call returns alsa-lib's own result; a negative one is an
error number, raised as :class:`AlsaError` except where the caller must tell it (``write``,
``avail``: -EPIPE, the card ran dry).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import select
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

STREAM_PLAYBACK = 0
NONBLOCK = 1
ACCESS_RW_INTERLEAVED = 3
FORMAT_S16_LE = 2
TSTAMP_ENABLE = 1

_pcm_p = ctypes.c_void_p
_uframes = ctypes.c_ulong
_sframes = ctypes.c_long


class AlsaError(OSError):
    """A call into alsa-lib failed; ``errno`` is its error number."""


class FormatRefused(AlsaError):
    """The device cannot play the sample format, channels or rate asked for as it is."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


@cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("asound")
    if name is None:
        raise AlsaError(errno.ENOENT, "libasound (alsa-lib) is not installed")
    lib = ctypes.CDLL(name)
    signatures: dict[str, tuple[object, list[object]]] = {
        "snd_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "snd_pcm_open": (ctypes.c_int, [ctypes.POINTER(_pcm_p), ctypes.c_char_p,
                                        ctypes.c_int, ctypes.c_int]),
        "snd_pcm_close": (ctypes.c_int, [_pcm_p]),
        "snd_pcm_hw_params_malloc": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p)]),
        "snd_pcm_hw_params_free": (None, [ctypes.c_void_p]),
        "snd_pcm_hw_params_any": (ctypes.c_int, [_pcm_p, ctypes.c_void_p]),
        "snd_pcm_hw_params_set_access": (ctypes.c_int, [_pcm_p, ctypes.c_void_p, ctypes.c_int]),
        "snd_pcm_hw_params_set_format": (ctypes.c_int, [_pcm_p, ctypes.c_void_p, ctypes.c_int]),
        "snd_pcm_hw_params_set_channels": (ctypes.c_int, [_pcm_p, ctypes.c_void_p,
                                                          ctypes.c_uint]),
        "snd_pcm_hw_params_set_rate": (ctypes.c_int, [_pcm_p, ctypes.c_void_p, ctypes.c_uint,
                                                      ctypes.c_int]),
        "snd_pcm_hw_params_set_period_size_near": (
            ctypes.c_int, [_pcm_p, ctypes.c_void_p, ctypes.POINTER(_uframes),
                           ctypes.POINTER(ctypes.c_int)]),
        "snd_pcm_hw_params_set_buffer_size_near": (
            ctypes.c_int, [_pcm_p, ctypes.c_void_p, ctypes.POINTER(_uframes)]),
        "snd_pcm_hw_params": (ctypes.c_int, [_pcm_p, ctypes.c_void_p]),
        "snd_pcm_sw_params_malloc": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p)]),
        "snd_pcm_sw_params_free": (None, [ctypes.c_void_p]),
        "snd_pcm_sw_params_current": (ctypes.c_int, [_pcm_p, ctypes.c_void_p]),
        "snd_pcm_sw_params_set_tstamp_mode": (ctypes.c_int, [_pcm_p, ctypes.c_void_p,
                                                             ctypes.c_int]),
        "snd_pcm_sw_params": (ctypes.c_int, [_pcm_p, ctypes.c_void_p]),
        "snd_pcm_get_params": (ctypes.c_int, [_pcm_p, ctypes.POINTER(_uframes),
                                              ctypes.POINTER(_uframes)]),
        "snd_pcm_writei": (_sframes, [_pcm_p, ctypes.c_void_p, _uframes]),
        "snd_pcm_recover": (ctypes.c_int, [_pcm_p, ctypes.c_int, ctypes.c_int]),
        "snd_pcm_avail": (_sframes, [_pcm_p]),
        "snd_pcm_htimestamp": (ctypes.c_int, [_pcm_p, ctypes.POINTER(_uframes),
                                              ctypes.POINTER(_Timespec)]),
        "snd_pcm_rewindable": (_sframes, [_pcm_p]),
        "snd_pcm_rewind": (_sframes, [_pcm_p, _uframes]),
        "snd_pcm_forward": (_sframes, [_pcm_p, _uframes]),
        "snd_pcm_poll_descriptors_count": (ctypes.c_int, [_pcm_p]),
        "snd_pcm_poll_descriptors": (ctypes.c_int, [_pcm_p, ctypes.POINTER(_PollFd),
                                                    ctypes.c_uint]),
    }
    for function, (restype, argtypes) in signatures.items():
        call = getattr(lib, function)
        call.restype, call.argtypes = restype, argtypes
    return lib


def _check(result: int, what: str, error: type[AlsaError] = AlsaError) -> int:
    if result < 0:
        message = _library().snd_strerror(result).decode(errors="replace")
        raise error(-result, f"{what}: {message}")
    return result


class PlaybackPcm:
    """An open playback PCM: interleaved s16le, non-blocking."""

    def __init__(self, name: str, rate: int, channels: int, period_frames: int,
                 buffer_frames: int) -> None:
        lib = _library()
        handle = _pcm_p()
        _check(lib.snd_pcm_open(ctypes.byref(handle), name.encode(), STREAM_PLAYBACK,
                                NONBLOCK), f"cannot open {name!r}")
        self._lib, self._handle = lib, handle
        try:
            self._configure(rate, channels, period_frames, buffer_frames)
        except AlsaError:
            self.close()
            raise
        self._frame_bytes = 2 * channels
        count = _check(lib.snd_pcm_poll_descriptors_count(handle), "poll descriptors")
        fds = (_PollFd * count)()
        _check(lib.snd_pcm_poll_descriptors(handle, fds, count), "poll descriptors")
        self._poller = select.poll()
        for fd in fds:
            self._poller.register(fd.fd, fd.events)

    @contextmanager
    def _params(self, kind: str) -> Iterator[ctypes.c_void_p]:
        """A ``snd_pcm_<kind>_params_t`` (``hw`` or ``sw``), freed after."""
        params = ctypes.c_void_p()
        _check(getattr(self._lib, f"snd_pcm_{kind}_params_malloc")(ctypes.byref(params)),
               f"{kind} params")
        try:
            yield params
        finally:
            getattr(self._lib, f"snd_pcm_{kind}_params_free")(params)

    def _configure(self, rate: int, channels: int, period_frames: int,
                   buffer_frames: int) -> None:
        lib, handle = self._lib, self._handle
        with self._params("hw") as hw:
            _check(lib.snd_pcm_hw_params_any(handle, hw), "hw params")
            _check(lib.snd_pcm_hw_params_set_access(handle, hw, ACCESS_RW_INTERLEAVED),
                   "interleaved access", FormatRefused)
            _check(lib.snd_pcm_hw_params_set_format(handle, hw, FORMAT_S16_LE), "s16le",
                   FormatRefused)
            _check(lib.snd_pcm_hw_params_set_channels(handle, hw, channels),
                   f"{channels} channels", FormatRefused)
            _check(lib.snd_pcm_hw_params_set_rate(handle, hw, rate, 0), f"{rate} Hz",
                   FormatRefused)
            period, buffer = _uframes(period_frames), _uframes(buffer_frames)
            _check(lib.snd_pcm_hw_params_set_period_size_near(handle, hw, ctypes.byref(period),
                                                              None), "period size")
            _check(lib.snd_pcm_hw_params_set_buffer_size_near(handle, hw, ctypes.byref(buffer)),
                   "buffer size")
            _check(lib.snd_pcm_hw_params(handle, hw), "hw params")
        with self._params("sw") as sw:
            _check(lib.snd_pcm_sw_params_current(handle, sw), "sw params")
            _check(lib.snd_pcm_sw_params_set_tstamp_mode(handle, sw, TSTAMP_ENABLE),
                   "timestamps")
            _check(lib.snd_pcm_sw_params(handle, sw), "sw params")

    def buffer_frames(self) -> int:
        buffer, period = _uframes(), _uframes()
        _check(self._lib.snd_pcm_get_params(self._handle, ctypes.byref(buffer),
                                            ctypes.byref(period)), "params")
        return buffer.value

    def write(self, data: memoryview) -> int:
        """Frames the card took (0 while full); -EPIPE: it ran dry and was prepared again,
        nothing written."""
        buffer = (ctypes.c_char * len(data)).from_buffer_copy(data)
        result = int(self._lib.snd_pcm_writei(self._handle, buffer,
                                              len(data) // self._frame_bytes))
        if result == -errno.EAGAIN:
            return 0
        if result in (-errno.EPIPE, -errno.ESTRPIPE):
            _check(self._lib.snd_pcm_recover(self._handle, result, 1), "recover")
            return -errno.EPIPE
        return _check(result, "write")

    def wait_writable(self, seconds: float) -> None:
        self._poller.poll(max(1, round(seconds * 1000)))

    def avail(self) -> int:
        """Frames the card has room for; -EPIPE when it ran dry."""
        result = int(self._lib.snd_pcm_avail(self._handle))
        return result if result == -errno.EPIPE else _check(result, "avail")

    def htimestamp(self) -> tuple[float, int]:
        """The kernel's time of the card's last pointer update (0.0: the driver gives
        none), and the frames it had room for then."""
        available, stamp = _uframes(), _Timespec()
        _check(self._lib.snd_pcm_htimestamp(self._handle, ctypes.byref(available),
                                            ctypes.byref(stamp)), "timestamp")
        return stamp.tv_sec + stamp.tv_nsec / 1e9, available.value

    def rewindable(self) -> int:
        return max(0, int(self._lib.snd_pcm_rewindable(self._handle)))

    def rewind(self, frames: int) -> bool:
        """All ``frames`` taken back, or (False) none."""
        taken = int(self._lib.snd_pcm_rewind(self._handle, frames))
        if taken == frames:
            return True
        if taken > 0:
            self._lib.snd_pcm_forward(self._handle, taken)
        return False

    def close(self) -> None:
        if self._handle:
            self._lib.snd_pcm_close(self._handle)
            self._handle = _pcm_p()
