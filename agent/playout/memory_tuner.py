"""The in-memory FM tuner of the deterministic simulation (tests/simulation): the real
:class:`~agent.playout.fm_tuner.FmTuner` lease bookkeeping (acquire, share, retune,
release) over a receiver that is a table of stations instead of a dongle and a thread.

A station in ``stations`` with True is heard; False (or absent) is below the squelch: the
relay reads silence, counts nothing relayed and, after ``lost_after_s``, raises
``fm_signal_lost`` as the real relay does.
"""

from __future__ import annotations

from agent.core.faults import FaultRegistry
from agent.playout.fm_tuner import FmTuner, TunerLease
from agent.playout.memory_media import LOUD_FRAME
from agent.playout.voice import BYTES_PER_FRAME
from drivers.clock import Clock
from drivers.sdr.none import NoReceiver


class MemoryTuner(FmTuner):
    def __init__(self, faults: FaultRegistry, clock: Clock, stations: dict[float, bool],
                 lost_after_s: float = 1.0) -> None:
        super().__init__(NoReceiver, faults, clock, squelch_dbfs=-30.0,
                         lost_after_s=lost_after_s)
        self.stations = stations
        self._relayed = 0
        self._quiet_since: float | None = None
        self.tunings = 0

    @property
    def relayed_frames(self) -> int:
        return self._relayed

    @property
    def held(self) -> list[TunerLease]:
        """The leases on the station it is tuned to that were not released."""
        return [lease for lease in self._leases if not lease.released]

    def tune(self, frequency_mhz: float | None) -> None:
        if frequency_mhz is None and self._frequency_mhz is not None:
            self._faults.clear("fm_signal_lost")
        elif frequency_mhz is not None:
            self.tunings += 1
        self._frequency_mhz = frequency_mhz
        self._quiet_since = None

    def stop(self) -> None:
        self.tune(None)

    def read(self, frames: int) -> bytes:
        now = self._clock.monotonic()
        if self.running and self.stations.get(self._frequency_mhz or 0.0, False):
            self._quiet_since = None
            self._faults.clear("fm_signal_lost")
            self._relayed += frames
            return LOUD_FRAME * frames
        if self._quiet_since is None:
            self._quiet_since = now
        elif self.running and now - self._quiet_since >= self._lost_after_s:
            self._faults.raise_("fm_signal_lost", f"{self._frequency_mhz} MHz below squelch")
        return bytes(frames * BYTES_PER_FRAME)
