"""MediaCache against the real simulator: verification, resume, quota, pins, crash recovery."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.schedule import MediaEntry
from agent.source.cache import CacheError
from agent.source.cache_partial import _DURABLE_STEP
from agent.source.client import SourceError
from tests.support import media
from tests.support.filesystems import small_tmpfs
from tests.support.source_sim import SourceRig, add_media, media_bytes, source_rig


def entry_for(content: Path, media_id: str, size: int, seed: int = 0) -> MediaEntry:
    raw = add_media(content, media_id, media_bytes(size, seed), duration_s=1.0)
    return MediaEntry(id=raw["id"], url=raw["url"], sha256=raw["sha256"], size=raw["size"])


def test_file_is_playable_only_once_verified(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 700_000)
        assert cache.path(entry.sha256) is None
        assert cache.missing([entry]) == [entry]
        path = cache.fetch(entry, rig.client)
        assert path == cache.path(entry.sha256) == tmp_path / "cache" / entry.sha256[:2] / \
            entry.sha256
        assert path is not None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
        assert cache.missing([entry]) == []
        assert list((tmp_path / "cache" / "partial").iterdir()) == []
        assert cache.stats().items == 1 and cache.stats().bytes == entry.size


def test_wrong_hash_is_discarded_then_recovered(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 100_000)
        cache.set_referenced([entry])
        rig.sim.set_faults(wrong_hash=True)
        with pytest.raises(CacheError) as err:
            cache.fetch(entry, rig.client)
        assert err.value.code == "media_corrupt"
        assert "m-1" in rig.raised()["media_corrupt"]
        assert cache.path(entry.sha256) is None
        assert list((tmp_path / "cache" / "partial").iterdir()) == []
        rig.sim.set_faults(wrong_hash=False)
        assert cache.fetch(entry, rig.client) is not None
        assert "media_corrupt" not in rig.raised()


def test_interrupted_download_resumes_with_range(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 2_000_000)
        rig.sim.set_faults(truncate=True)
        with pytest.raises(SourceError) as err:
            cache.fetch(entry, rig.client)
        assert err.value.code == "source_unreachable"
        assert cache.path(entry.sha256) is None
        rig.sim.set_faults(truncate=False)
        assert cache.fetch(entry, rig.client) is not None
        assert rig.sim.stats()["media_bytes"]["m-1"] <= 1.05 * entry.size


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 1_000_000)
        rig.sim.set_faults(truncate=True)
        with pytest.raises(SourceError):
            cache.fetch(entry, rig.client)
        rig.sim.set_faults(truncate=False, ignore_range=True)
        path = cache.fetch(entry, rig.client)
        assert path is not None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_body_longer_than_the_entry_is_corrupt(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        real = entry_for(rig.content, "m-1", 50_000)
        short = MediaEntry(id="m-1", url=real.url, sha256=real.sha256, size=40_000)
        with pytest.raises(CacheError) as err:
            cache.fetch(short, rig.client)
        assert err.value.code == "media_corrupt"
        assert "more than" in rig.raised()["media_corrupt"]


def test_body_shorter_than_the_entry_is_kept_for_resume(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        real = entry_for(rig.content, "m-1", 50_000)
        longer = MediaEntry(id="m-1", url=real.url, sha256=real.sha256, size=60_000)
        with pytest.raises(SourceError) as err:
            cache.fetch(longer, rig.client)
        assert err.value.code == "source_bad_response"
        assert (tmp_path / "cache" / "partial" / f"{real.sha256}.part").stat().st_size == 50_000


def test_quota_evicts_only_unreferenced_unpinned_lru(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache(max_bytes=3_000)
        a, b, c, d = (entry_for(rig.content, f"m-{i}", 1_000, seed=i) for i in range(4))
        for entry in (a, b, c):
            cache.fetch(entry, rig.client)
            rig.clock.advance(100)
        cache.set_referenced([c, d])
        assert cache.pin(a.sha256) is not None  # a plays now; b is the only candidate
        cache.fetch(d, rig.client)
        assert cache.path(b.sha256) is None
        assert all(cache.path(e.sha256) is not None for e in (a, c, d))
        e = entry_for(rig.content, "m-4", 1_000, seed=4)
        with pytest.raises(CacheError) as err:
            cache.fetch(e, rig.client)  # a pinned, c and d referenced: no room
        assert err.value.code == "cache_quota"
        assert cache.path(a.sha256) is not None
        cache.unpin(a.sha256)
        cache.fetch(e, rig.client)
        assert cache.path(a.sha256) is None


def test_evict_brings_cache_under_quota_least_recently_used_first(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache(max_bytes=10_000)
        a, b, c = (entry_for(rig.content, f"m-{i}", 3_000, seed=i) for i in range(3))
        for entry in (a, b, c):
            cache.fetch(entry, rig.client)
            rig.clock.advance(100)
        cache.path(a.sha256)  # a used recently: b is the oldest now
        cache.max_bytes = 6_000
        assert cache.evict() == [b.sha256]


def test_schedule_larger_than_quota_raises_cache_quota(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache(max_bytes=1_500)
        a, b = (entry_for(rig.content, f"m-{i}", 1_000, seed=i) for i in range(2))
        cache.set_referenced([a, b])
        assert "2000 bytes" in rig.raised()["cache_quota"]
        cache.set_referenced([a])
        assert "cache_quota" not in rig.raised()


def _interrupted_part(rig: SourceRig, tmp_path: Path) -> tuple[MediaEntry, Path, int]:
    """A download cut off half-way: (entry, its .part file, its fsynced length)."""
    entry = entry_for(rig.content, "m-1", 3 * _DURABLE_STEP + 1234)
    rig.sim.set_faults(truncate=True)
    with pytest.raises(SourceError):
        rig.cache().fetch(entry, rig.client)
    part = tmp_path / "cache" / "partial" / f"{entry.sha256}.part"
    durable = part.stat().st_size
    assert durable > 0
    rig.sim.set_faults(truncate=False)
    return entry, part, durable


def test_after_a_power_cut_the_part_is_cut_to_its_durable_length(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        entry, part, durable = _interrupted_part(rig, tmp_path)
        with open(part, "ab") as f:  # what a power cut can leave past the durable length
            f.write(b"\xde\xad" * 50_000)
        rig.store.put("cache.partial_boot_id", "the boot before the power cut")
        served_before = rig.sim.stats()["media_bytes"]["m-1"]
        restarted = rig.cache()  # a new process: reconcile, then resume
        path = restarted.fetch(entry, rig.client)
        assert path is not None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
        assert rig.sim.stats()["media_bytes"]["m-1"] - served_before == entry.size - durable


def test_after_a_crash_without_reboot_every_byte_on_disk_is_kept(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        entry, part, _ = _interrupted_part(rig, tmp_path)
        data = rig.content / "media" / "m-1"
        with open(part, "r+b") as f:  # written by the killed process, never fsynced
            f.seek(0, 2)
            on_disk = f.tell() + 100_000
            f.write(data.read_bytes()[f.tell():on_disk])
        served_before = rig.sim.stats()["media_bytes"]["m-1"]
        path = rig.cache().fetch(entry, rig.client)
        assert path is not None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
        assert rig.sim.stats()["media_bytes"]["m-1"] - served_before == entry.size - on_disk


def test_reconcile_after_crash(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        kept, lost, unlisted = (entry_for(rig.content, f"m-{i}", 2_000, seed=i)
                                for i in range(3))
        for entry in (kept, lost, unlisted):
            cache.fetch(entry, rig.client)
        cache_dir = tmp_path / "cache"
        (cache_dir / lost.sha256[:2] / lost.sha256).unlink()
        with rig.store.transaction() as db:  # crash between the rename and the index update
            db.execute("DELETE FROM media_cache WHERE sha256=?", (unlisted.sha256,))
        stray = cache_dir / "ab" / ("ab" + "0" * 62)
        stray.parent.mkdir(exist_ok=True)
        stray.write_bytes(b"not what the name says")
        orphan_part = cache_dir / "partial" / ("cd" * 32 + ".part")
        orphan_part.write_bytes(b"half a file")
        restarted = rig.cache()
        assert restarted.path(kept.sha256) is not None
        assert restarted.path(lost.sha256) is None
        assert restarted.path(unlisted.sha256) is not None
        assert not stray.exists() and not orphan_part.exists()
        assert {e.sha256 for e in restarted.entries()} == {kept.sha256, unlisted.sha256}


def test_verify_drops_damaged_files_but_keeps_playing_ones(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        a, b = (entry_for(rig.content, f"m-{i}", 4_000, seed=i) for i in range(2))
        for entry in (a, b):
            path = cache.fetch(entry, rig.client)
            assert path is not None
            with open(path, "r+b") as f:
                f.write(b"\x00\x01")  # bit rot on the SD card
        cache.pin(a.sha256)
        problems = cache.verify()
        assert len(problems) == 2 and "kept while it plays" in problems[0] + problems[1]
        assert cache.path(a.sha256) is not None and cache.path(b.sha256) is None
        assert "m-1" in rig.raised()["media_corrupt"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem for the cache."""
    with small_tmpfs(tmp_path / "small", "1m") as mount_point:
        yield mount_point


def test_a_file_that_cannot_fit_is_not_even_requested_until_there_is_room(tmp_path: Path,
                                                                          small_fs: Path) -> None:
    with source_rig(tmp_path, cache_dir=small_fs / "cache") as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 1_500_000)
        for _ in range(3):  # every retry of the sync
            with pytest.raises(CacheError) as err:
                cache.fetch(entry, rig.client)
            assert err.value.code == "disk_full"
        assert "m-1" in rig.raised()["disk_full"]
        assert rig.sim.stats()["media_bytes"].get("m-1", 0) == 0, "bytes fetched in vain"
        subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
        assert cache.fetch(entry, rig.client) is not None
        assert "disk_full" not in rig.raised()
        assert rig.sim.stats()["media_bytes"]["m-1"] == entry.size


@pytest.mark.parametrize("kind", ["wav", "mp3"])
def test_the_length_of_a_cached_file_is_read_from_its_headers(tmp_path: Path, kind: str) -> None:
    """For media entries without duration_s (the contract allows it)."""
    wav = media.tone(tmp_path / "t.wav", 440, 3.0)
    audio = wav if kind == "wav" else media.to_mp3(wav, tmp_path / "t.mp3")
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        raw = add_media(rig.content, "m-1", audio, duration_s=None if kind == "wav" else 1.0)
        entry = MediaEntry(id=raw["id"], url=raw["url"], sha256=raw["sha256"], size=raw["size"])
        assert cache.duration_s(entry.sha256) is None  # not cached yet
        cache.fetch(entry, rig.client)
        assert cache.duration_s(entry.sha256) == pytest.approx(3.0, abs=0.06)


def test_a_file_that_is_not_audio_has_no_length(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        cache = rig.cache()
        entry = entry_for(rig.content, "m-1", 10_000)
        cache.fetch(entry, rig.client)
        assert cache.duration_s(entry.sha256) is None
