"""How far the voice on air has played, as the playout process last rendered it, in memory
the agent shares.

The playout process tells the agent each voice's counts (played, underrun, relayed and
lead frames) in its status every STATUS_INTERVAL_S and when a voice ends. Between two
statuses they live only in that process, and it can die or hang at any instant. So its
engine also writes the counts of the voice on air here every few periods
(host.TALLY_EVERY_PERIODS: 45 ms), and when the process is gone the agent reads how far
that voice had played from here.

One page from ``memfd_create`` per playout process: the agent makes it and passes the
descriptor at the start. SLOTS slots, each (sequence, voice id, four counts, sequence
again); a voice takes the next slot when it comes on air. A slot whose two sequence
numbers differ was being written when the process was killed: the agent keeps the
status's counts for that voice.
"""

from __future__ import annotations

import mmap
import os
import struct

SLOTS = 32
_SLOT = struct.Struct("<7q")
SIZE = SLOTS * _SLOT.size

Counts = tuple[int, int, int, int]  # played, underrun, relayed, lead


class TallyWriter:
    """The playout process's side; only its engine thread writes. ``fd`` -1: nobody reads
    what it writes (a playout process started by hand)."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, SIZE)
        self._sequence = 0
        self._slot = -1
        self._voice_id: int | None = None

    def write(self, voice_id: int, counts: Counts) -> None:
        if voice_id != self._voice_id:
            self._voice_id = voice_id
            self._slot = (self._slot + 1) % SLOTS
        self._sequence += 1
        _SLOT.pack_into(self._map, self._slot * _SLOT.size, self._sequence, voice_id,
                        *counts, self._sequence)


class Tally:
    """The agent's side: made before the playout process starts, read after it is gone."""

    def __init__(self) -> None:
        fd = os.memfd_create("playout-tally", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        except OSError:
            os.close(fd)
            raise
        self.fd = fd  # for the playout process; close_fd() once it has it

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def counts(self) -> dict[int, Counts]:
        """The last whole counts written for each voice id."""
        slots = [_SLOT.unpack_from(self._map, i * _SLOT.size) for i in range(SLOTS)]
        whole = sorted((s for s in slots if s[0] > 0 and s[0] == s[6]), key=lambda s: s[0])
        return {s[1]: (s[2], s[3], s[4], s[5]) for s in whole}

    def close(self) -> None:
        self.close_fd()
        self._map.close()
