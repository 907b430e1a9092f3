"""The media cache's downloads in progress: ``partial/<sha>.part`` files that a crash or a
power cut does not spoil.

Every ``_DURABLE_STEP`` bytes the .part file is fsynced and its durable length recorded in
the index. On resume the file is cut back to that length (whatever the kernel wrote past it
may be garbage) and the prefix re-hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.source.cache_storage import CacheStorage, log

_DURABLE_STEP = 256 * 1024
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_WRITER_BOOT_KEY = "cache.partial_boot_id"  # the boot during which .part files were written
_HASH_CHUNK = 1024 * 1024


def resume_part(storage: CacheStorage, sha: str, size: int) -> tuple[int, hashlib._Hash]:
    """Where to resume, with the hash of the prefix kept.

    After a power cut only the fsynced (durable) length can be trusted: the rest may
    be zeros or garbage, so the .part is cut back to it. When the machine has not
    rebooted since the .part was written (the agent was killed or restarted), the
    kernel kept every byte written, and all of it is kept: a crash costs no re-fetch.
    """
    part = storage.part(sha)
    row = storage.row(sha)
    on_disk = part.stat().st_size if part.exists() else 0
    same_boot = _boot_id() is not None and storage.state.get(_WRITER_BOOT_KEY) == _boot_id()
    trusted = on_disk if same_boot else (row.durable_bytes if row is not None else 0)
    durable = min(trusted, on_disk, size)
    with open(part, "ab") as f:
        f.truncate(durable)
    hasher = hashlib.sha256()
    with open(part, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            hasher.update(block)
    storage.set(sha, durable_bytes=durable)
    return durable, hasher


def restart_part(storage: CacheStorage, sha: str) -> tuple[int, hashlib._Hash]:
    """Back to nothing (the server ignored the Range of a resume)."""
    os.truncate(storage.part(sha), 0)
    storage.set(sha, durable_bytes=0)
    return 0, hashlib.sha256()


def append_to_part(storage: CacheStorage, sha: str, chunks: Iterator[bytes], written: int,
                   hasher: hashlib._Hash, check: Callable[[int, bytes], None],
                   cancelled: Callable[[], bool]) -> int:
    """Append the body to the .part file; returns the length written (and fsynced).
    ``check(written, chunk)`` comes before each chunk is written, and raises to stop."""
    storage.state.put(_WRITER_BOOT_KEY, _boot_id())
    fd = os.open(storage.part(sha), os.O_WRONLY | os.O_CREAT, 0o644)
    unsynced = 0
    try:
        os.lseek(fd, written, os.SEEK_SET)
        for chunk in chunks:
            check(written, chunk)
            hasher.update(chunk)
            _write_all(fd, chunk)
            written += len(chunk)
            unsynced += len(chunk)
            if unsynced >= _DURABLE_STEP:
                os.fsync(fd)
                storage.set(sha, durable_bytes=written)
                unsynced = 0
            if cancelled():
                break
    finally:
        _sync_durable(storage, fd, sha, written)
    return written


def _sync_durable(storage: CacheStorage, fd: int, sha: str, written: int) -> None:
    """Close the .part, recording how much of it is durable (when fsync works)."""
    try:
        os.fsync(fd)
        if storage.row(sha) is not None:
            storage.set(sha, durable_bytes=written)
    except OSError as exc:
        log.warning("cache: fsync of %s.part failed: %s", sha, exc)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _boot_id() -> str | None:
    """The kernel's id of this boot: it changes at every reboot and power cut."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None
