"""Threads the kernel knows by name too: ``top -H``, ``ps -L`` and
``/proc/<pid>/task/<tid>/comm`` show "playout" or "wav-dac" rather than the
interpreter's name, which is what a technician looking for a busy thread needs.

Drivers never import the agent; the agent starts its threads as these too.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

_COMM_BYTES = 15  # the kernel keeps 15 bytes of a thread's name, and a NUL


def _kernel_namer() -> Callable[[bytes], object] | None:
    """pthread_setname_np for the calling thread; None where the C library has none."""
    try:
        libc = ctypes.CDLL(None)
        setname, self_id = libc.pthread_setname_np, libc.pthread_self
    except (OSError, AttributeError):
        return None
    self_id.restype = ctypes.c_ulong
    setname.argtypes = [ctypes.c_ulong, ctypes.c_char_p]

    def name_calling_thread(name: bytes) -> object:
        return setname(self_id(), name)
    return name_calling_thread


_NAME_CALLING_THREAD = _kernel_namer()


class NamedThread(threading.Thread):
    """A ``threading.Thread`` that gives the kernel its name as it starts."""

    def run(self) -> None:
        if _NAME_CALLING_THREAD is not None:
            _NAME_CALLING_THREAD(self.name.encode(errors="replace")[:_COMM_BYTES])
        super().run()
