"""A hostile source (source-api.md): bounded bodies, overall deadlines, the token only to
the origin of source.url, http(s) only."""

from __future__ import annotations

import gzip
import io
import json
import resource
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import urllib3

from agent.core.schedule_parser import parse_schedule
from agent.source.bodies import BodyBroken, BodyTooLarge, error_excerpt, read_bounded
from agent.source.cache import MediaCache
from agent.source.client import SourceError, origin
from agent.source.sync import KEY_VERSION, SyncService
from tests.support.hostile import gzip_bomb
from tests.support.simulator import SourceSimulator
from tests.support.source_sim import (
    DEVICE,
    add_media,
    media_bytes,
    schedule_doc,
    source_rig,
    write_schedule,
)


def response(body: bytes, **headers: str) -> requests.Response:
    """A streaming requests.Response over ``body`` as received from the network."""
    raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=headers, status=200,
                               preload_content=False, decode_content=False)
    reply = requests.Response()
    reply.raw = raw
    reply.status_code = 200
    reply.headers = requests.structures.CaseInsensitiveDict(headers)
    return reply


# --- bounded bodies ----------------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "encode"), [
    ("identity", lambda b: b), ("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_bodies_are_decoded_within_the_bound(encoding: str,
                                             encode: Callable[[bytes], bytes]) -> None:
    body = b'{"version": 1}' * 100
    assert read_bounded(response(encode(body), **{"Content-Encoding": encoding}),
                        len(body)) == body


def test_a_body_over_the_bound_is_refused_after_decoding() -> None:
    body = gzip.compress(b" " * 10_000)
    assert len(body) < 1_000
    with pytest.raises(BodyTooLarge):
        read_bounded(response(body, **{"Content-Encoding": "gzip"}), 9_999)


def test_a_declared_length_over_the_bound_is_refused_before_reading() -> None:
    with pytest.raises(BodyTooLarge, match="Content-Length"):
        read_bounded(response(b"x" * 10, **{"Content-Length": "10000000"}), 1000)


def test_a_gzip_bomb_is_cut_early_without_inflating_it() -> None:
    bomb = b"".join(gzip_bomb(256 * 1024 * 1024))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BodyTooLarge):
        read_bounded(response(bomb, **{"Content-Encoding": "gzip"}), 4 * 1024 * 1024)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


def test_broken_or_unknown_encodings_are_bad_bodies() -> None:
    with pytest.raises(BodyBroken, match="decode"):
        read_bounded(response(b"not gzip at all", **{"Content-Encoding": "gzip"}), 1000)
    with pytest.raises(BodyBroken, match="Content-Encoding"):
        read_bounded(response(b"x", **{"Content-Encoding": "br"}), 1000)


def test_error_bodies_are_read_to_a_small_limit() -> None:
    excerpt = error_excerpt(response(b"E" * 10_000_000))
    assert excerpt == "E" * 200


# --- the schedule ------------------------------------------------------------------------

def test_a_2gb_gzip_bomb_schedule_is_refused_as_too_large(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        rig.sim.set_faults(gzip_bomb_bytes=2 * 1024 ** 3)
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == "schedule_too_large"
        assert "4194304" in err.value.message


def test_a_schedule_padded_past_max_schedule_bytes_is_refused(tmp_path: Path) -> None:
    with source_rig(tmp_path, max_schedule_bytes=2048) as rig:
        doc = schedule_doc(1, DEVICE, [])
        (rig.content / "schedule.json").write_text(json.dumps(doc) + " " * 5000)
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == "schedule_too_large"


def test_a_trickled_schedule_is_cut_at_the_overall_deadline(tmp_path: Path) -> None:
    with source_rig(tmp_path, request_deadline_s=1.0, read_timeout_s=30) as rig:
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        rig.sim.set_faults(trickle_s=0.2)
        with pytest.raises(SourceError) as err:
            rig.client.fetch_schedule(None)
        assert err.value.code == "source_unreachable"
        assert "deadline of 1 s" in err.value.message


def test_sync_keeps_the_last_good_schedule_and_raises_schedule_too_large(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        service = SyncService(rig.client, rig.cache(), rig.store, rig.journal, rig.faults,
                              rig.clock, device_id=DEVICE, default_tz="Asia/Ho_Chi_Minh",
                              poll_interval_s=60, max_backoff_s=30, on_applied=lambda s: None)
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        assert service.run_once()
        write_schedule(rig.content, schedule_doc(2, DEVICE, []))
        rig.sim.set_faults(gzip_bomb_bytes=64 * 1024 ** 2)
        assert not service.run_once()
        assert "schedule_too_large" in rig.raised()
        assert service.applied is not None and service.applied.version == 1
        assert rig.store.get(KEY_VERSION) == 1
        assert service.status().reachable
        rig.sim.set_faults(gzip_bomb_bytes=0)
        assert service.run_once()
        assert "schedule_too_large" not in rig.raised()
        assert service.applied.version == 2


# --- where the token goes -------------------------------------------------------------------

@pytest.fixture
def cdn(tmp_path: Path) -> Iterator[SourceSimulator]:
    """Another origin serving media, without a token of its own."""
    content = tmp_path / "cdn"
    content.mkdir()
    with SourceSimulator(content, DEVICE, token=None) as sim:
        yield sim


def test_media_on_another_origin_is_fetched_without_the_token(tmp_path: Path,
                                                              cdn: SourceSimulator) -> None:
    with source_rig(tmp_path) as rig:
        entry = add_media(cdn.directory, "m-1", media_bytes(10_000), duration_s=1.0,
                          url=f"{cdn.url}/media/m-1")
        schedule = parse_schedule(schedule_doc(1, DEVICE, [entry]), "UTC").schedule
        assert rig.cache().fetch(schedule.media["m-1"], rig.client) is not None
        assert cdn.stats()["requests"]["media"] == 1
        assert "with_authorization" not in cdn.stats()["requests"]
        write_schedule(rig.content, schedule_doc(1, DEVICE, []))
        rig.client.fetch_schedule(None)
        assert rig.sim.stats()["requests"]["with_authorization"] == 1


def test_a_redirect_to_another_origin_drops_the_token(tmp_path: Path, cdn: SourceSimulator) -> None:
    with source_rig(tmp_path) as rig:
        entry = add_media(rig.content, "m-1", media_bytes(10_000), duration_s=1.0)
        add_media(cdn.directory, "m-1", media_bytes(10_000), duration_s=1.0)
        rig.sim.set_faults(media_redirect=f"{cdn.url}/media/")
        schedule = parse_schedule(schedule_doc(1, DEVICE, [entry]), "UTC").schedule
        assert rig.cache().fetch(schedule.media["m-1"], rig.client) is not None
        assert rig.sim.stats()["requests"]["with_authorization"] == 1
        assert cdn.stats()["requests"]["media"] == 1
        assert "with_authorization" not in cdn.stats()["requests"]


def test_a_redirect_to_a_file_url_is_refused(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        entry = add_media(rig.content, "m-1", media_bytes(100), duration_s=1.0)
        rig.sim.set_faults(media_redirect="file:///etc/")
        schedule = parse_schedule(schedule_doc(1, DEVICE, [entry]), "UTC").schedule
        with pytest.raises(SourceError) as err:
            rig.cache().fetch(schedule.media["m-1"], rig.client)
        assert err.value.code == "source_bad_response"
        assert "only http and https" in err.value.message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "rtsp://cam/1", "/dev/snd"])
def test_schedule_programs_with_non_web_urls_are_invalid(url: str) -> None:
    doc = schedule_doc(1, DEVICE, [])
    doc["media"] = [{"id": "m-1", "url": url, "sha256": "a" * 64, "size": 1}]
    doc["programs"] = [
        {"id": "p-1", "source": {"type": "media", "items": ["m-1"]}, "start": "06:00:00"},
        {"id": "p-2", "source": {"type": "stream", "url": url}, "start": "07:00:00",
         "duration_s": 60}]
    parsed = parse_schedule(doc, "UTC")
    if url.startswith("/"):  # a relative URL resolves against source.url: http(s)
        assert "m-1" in parsed.schedule.media
        assert [pid for pid, _ in parsed.problems] == ["p-2"]
    else:
        assert parsed.schedule.programs == ()
        assert {pid for pid, _ in parsed.problems} == {"m-1", "p-1", "p-2"}


def test_origins_compare_scheme_host_and_port() -> None:
    assert origin("https://A.example/api/v1") == origin("https://a.example:443/media/x")
    assert origin("http://a.example/x") != origin("https://a.example/x")
    assert origin("https://a.example:8443/x") != origin("https://a.example/x")


# --- a full disk ------------------------------------------------------------------------------

def test_below_the_free_space_reserve_no_download_is_requested(tmp_path: Path) -> None:
    with source_rig(tmp_path) as rig:
        entry = add_media(rig.content, "m-1", media_bytes(10_000), duration_s=1.0)
        write_schedule(rig.content, schedule_doc(1, DEVICE, [entry]))
        cache = MediaCache(rig.store, rig.cache_dir, 100_000_000, rig.clock, rig.faults,
                           min_free_bytes=2 ** 62)  # more than any disk has free
        service = SyncService(rig.client, cache, rig.store, rig.journal, rig.faults,
                              rig.clock, device_id=DEVICE, default_tz="Asia/Ho_Chi_Minh",
                              poll_interval_s=60, max_backoff_s=30, on_applied=lambda s: None)
        assert not service.run_once()  # a failed cycle: the sync backs off
        assert not service.run_once()
        assert "cache.min_free_bytes" in rig.raised()["disk_full"]
        assert "media" not in rig.sim.stats()["requests"]
        assert service.applied is not None  # the schedule itself was applied
