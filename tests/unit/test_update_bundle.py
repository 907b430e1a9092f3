"""Release bundles (agent/update/bundle.py, store.py): the download is checked for size and
sha256 as it streams, the tar and the wheel inside are checked before anything is
written, and a version is installed complete beside the others or not at all."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.update.bundle import MANIFEST, Bundle, BundleError, download, write_bundle
from agent.update.store import VersionStore
from tests.support.bundles import LOCK

VERSION = "1.1"


def fake_wheel(folder: Path, version: str = VERSION,
               extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    """A small wheel of the agent's shape: agent/, drivers/ and its dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"broadcast_agent-{version}-py3-none-any.whl"
    dist = f"broadcast_agent-{version}.dist-info"
    files = {"agent/__init__.py": b"", "agent/update/__init__.py": b"",
             "drivers/__init__.py": b"", f"{dist}/METADATA": f"Version: {version}\n".encode(),
             **(extra or {})}
    with zipfile.ZipFile(path, "w") as wheel:
        for name, body in files.items():
            wheel.writestr(name, body)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            wheel.writestr(info, "/etc/passwd")
    return path


def bundle_of(tmp: Path, wheel: Path, version: str = VERSION) -> Path:
    return write_bundle(wheel, LOCK, tmp / f"{version}.bundle", version)


def tar_with(tmp: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    path = tmp / "crafted.bundle"
    with tarfile.open(path, "w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        if symlink is not None:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../etc/passwd"
            tar.addfile(info)
    return path


def good_members(tmp: Path) -> dict[str, bytes]:
    wheel = fake_wheel(tmp / "w")
    manifest = {"format": 1, "name": "broadcast-agent", "version": VERSION,
                "wheel": wheel.name, "lock": "requirements.lock"}
    return {MANIFEST: json.dumps(manifest).encode(), wheel.name: wheel.read_bytes(),
            "requirements.lock": LOCK.read_bytes()}


# --- the tar and the wheel ----------------------------------------------------------------

def test_a_built_bundle_opens_and_installs_beside(tmp_path: Path) -> None:
    bundle = Bundle.open(bundle_of(tmp_path, fake_wheel(tmp_path / "w")), VERSION)
    store = VersionStore(tmp_path / "root")
    target = store.install(bundle)
    assert target == tmp_path / "root" / "versions" / VERSION
    assert (target / "agent" / "__init__.py").is_file()
    assert (target / f"broadcast_agent-{VERSION}.dist-info" / "METADATA").is_file()
    assert [p.name for p in store.versions.iterdir()] == [VERSION]


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "sub/evil"])
def test_tar_members_outside_the_top_are_refused(tmp_path: Path, name: str) -> None:
    crafted = tar_with(tmp_path, {**good_members(tmp_path), name: b"x"})
    with pytest.raises(BundleError, match="not a plain file at the top"):
        Bundle.open(crafted, VERSION)


def test_a_tar_symlink_is_refused(tmp_path: Path) -> None:
    crafted = tar_with(tmp_path, good_members(tmp_path), symlink="escape")
    with pytest.raises(BundleError, match="'escape' is not a plain file"):
        Bundle.open(crafted, VERSION)


def test_an_unexpected_top_level_file_is_refused(tmp_path: Path) -> None:
    crafted = tar_with(tmp_path, {**good_members(tmp_path), "extra.sh": b"#!/bin/sh"})
    with pytest.raises(BundleError, match="unexpected members"):
        Bundle.open(crafted, VERSION)


def test_a_bundle_of_another_version_is_refused(tmp_path: Path) -> None:
    path = bundle_of(tmp_path, fake_wheel(tmp_path / "w", "1.2"), "1.2")
    with pytest.raises(BundleError, match=r"holds version '1\.2', the command says '1\.1'"):
        Bundle.open(path, VERSION)


def test_garbage_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bundle"
    path.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BundleError, match="bad_bundle: not a readable bundle"):
        Bundle.open(path, VERSION)


@pytest.mark.parametrize(("member", "why"), [
    ("../../evil.py", "outside the agent's packages"),
    ("/abs/evil.py", "outside the agent's packages"),
    ("agent/../../evil.py", "outside the agent's packages"),
    ("usr/bin/evil", "outside the agent's packages"),
])
def test_wheel_members_outside_the_packages_are_refused_before_writing(
        tmp_path: Path, member: str, why: str) -> None:
    wheel = fake_wheel(tmp_path / "w", extra={member: b"boom"})
    bundle = Bundle.open(bundle_of(tmp_path, wheel), VERSION)
    store = VersionStore(tmp_path / "root")
    with pytest.raises(BundleError, match=why):
        store.install(bundle)
    assert not store.installed(VERSION)
    assert not (tmp_path / "evil.py").exists()


def test_a_wheel_symlink_is_refused(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "w", link="agent/escape")
    bundle = Bundle.open(bundle_of(tmp_path, wheel), VERSION)
    with pytest.raises(BundleError, match="'agent/escape' is a link"):
        VersionStore(tmp_path / "root").install(bundle)


def test_dependencies_the_venv_lacks_are_named(tmp_path: Path) -> None:
    bundle = Bundle.open(bundle_of(tmp_path, fake_wheel(tmp_path / "w")), VERSION)
    assert bundle.missing_dependencies() == []  # this venv is the lock's
    changed = Bundle(bundle.path, VERSION, bundle.wheel,
                     "numpy==0.0.1 \\\n    --hash=sha256:00\nno-such-dist==1.0\n")
    assert changed.missing_dependencies() == [
        f"numpy==0.0.1 (installed: {_version('numpy')})",
        "no-such-dist==1.0 (installed: None)"]


def _version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def test_keep_only_removes_the_other_versions_and_clean_removes_leftovers(
        tmp_path: Path) -> None:
    store = VersionStore(tmp_path / "root")
    for version in ("1.0", "1.1", "1.2"):
        store.install(Bundle.open(bundle_of(tmp_path, fake_wheel(tmp_path / version,
                                                                 version), version), version))
    store.clean()  # as at a start: downloads/ is there
    (store.versions / ".new-1.3").mkdir()  # an unpack a power cut interrupted
    (store.downloads / "1.3.bundle.part").write_bytes(b"half")
    store.keep_only("1.2", "1.1")
    store.clean()
    assert sorted(p.name for p in store.versions.iterdir()) == ["1.1", "1.2"]
    assert list(store.downloads.iterdir()) == []


# --- the download ---------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    announce: int | None = None  # Content-Length sent (None: none, the body ends at close)
    send = 0  # bytes of the body actually sent

    def do_GET(self) -> None:
        self.send_response(200)
        if self.announce is not None:
            self.send_header("Content-Length", str(self.announce))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.body[:self.send])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/b.bundle", handler
    httpd.shutdown()
    httpd.server_close()


BODY = bytes(range(256)) * 400
SHA = hashlib.sha256(BODY).hexdigest()


def serve(handler: type[_Handler], announce: int | None, send: int) -> None:
    handler.body, handler.announce, handler.send = BODY, announce, send


def test_a_good_download_lands_whole(server: tuple[str, type[_Handler]],
                                     tmp_path: Path) -> None:
    url, handler = server
    serve(handler, len(BODY), len(BODY))
    download(url, tmp_path / "b", len(BODY), SHA, threading.Event())
    assert (tmp_path / "b").read_bytes() == BODY


@pytest.mark.parametrize(("announce", "send", "size", "sha", "error"), [
    (len(BODY), len(BODY), len(BODY), "0" * 64, "sha256: .* has sha256"),
    (len(BODY), len(BODY), len(BODY) - 1, SHA, "size: .* the command says"),
    (None, len(BODY), len(BODY) - 1000, SHA, "size: .* is over the"),
    (None, len(BODY) // 2, len(BODY), SHA, "size: .* ended after"),
    (len(BODY), len(BODY) // 2, len(BODY), SHA, "download: "),
], ids=["bad-sha256", "wrong-size-announced", "oversize-streamed", "truncated-at-close",
        "truncated-short-of-its-length"])
def test_a_bad_download_is_refused_and_leaves_nothing(
        server: tuple[str, type[_Handler]], tmp_path: Path, announce: int | None,
        send: int, size: int, sha: str, error: str) -> None:
    url, handler = server
    serve(handler, announce, send)
    with pytest.raises(BundleError, match=error):
        download(url, tmp_path / "b", size, sha, threading.Event())
    assert list(tmp_path.iterdir()) == []
