"""The release bundle (docs/updates.md): its format, its download and its checks.

A bundle is an uncompressed tar of exactly three flat members: ``bundle.json`` (the
manifest), the agent's wheel (pure Python, already compressed) and the
``requirements.lock`` it was built against. Anything else in the tar (a directory, a link,
a path with ``/``) refuses the bundle; the wheel's members are checked before anything is
written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath

import requests

FORMAT = 1
MANIFEST = "bundle.json"
LOCK = "requirements.lock"
UPDATE_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+_-]{0,63}$")  # also a folder name
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOP_LEVEL = ("agent", "drivers")
CHUNK = 64 * 1024
MAX_UNPACKED_FACTOR = 20  # a wheel may unpack to at most this many times the bundle's size
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class BundleError(Exception):
    """A bundle that must not be installed; ``code`` is the ack reason's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def wheel_name(version: str) -> str:
    return f"broadcast_agent-{version}-py3-none-any.whl"


def write_bundle(wheel: Path, lock: Path, out: Path, version: str) -> Path:
    """The bundle of ``wheel`` (built for ``version``) and ``lock`` as ``out``."""
    if wheel.name != wheel_name(version):
        raise ValueError(f"{wheel.name} is not the pure wheel of version {version}")
    manifest = json.dumps({"format": FORMAT, "name": "broadcast-agent", "version": version,
                           "wheel": wheel.name, "lock": LOCK}, indent=1).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(manifest))
        for path, name in ((wheel, wheel.name), (lock, LOCK)):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return out


def download(url: str, dest: Path, size: int, sha256: str, stopping: threading.Event,
             timeout_s: float = 30.0) -> None:
    """Stream ``url`` into ``dest`` (never into memory), checking that it is exactly
    ``size`` bytes with that ``sha256``; a body announced or found larger is cut at once.
    Raises BundleError, or InterruptedError when ``stopping`` is set."""
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    got = 0
    try:
        with requests.get(url, stream=True, timeout=(10, timeout_s)) as reply:
            if reply.status_code != 200:
                raise BundleError("download", f"{url} answered HTTP {reply.status_code}")
            announced = reply.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) != size:
                raise BundleError("size", f"{url} is {announced} bytes, the command says {size}")
            with open(partial, "wb") as f:
                for chunk in reply.iter_content(CHUNK):
                    if stopping.is_set():
                        raise InterruptedError("the agent is stopping")
                    got += len(chunk)
                    if got > size:
                        raise BundleError("size", f"{url} is over the {size} bytes the "
                                                  "command says")
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        if got != size:
            raise BundleError("size", f"{url} ended after {got} of {size} bytes")
        if digest.hexdigest() != sha256:
            raise BundleError("sha256", f"{url} has sha256 {digest.hexdigest()}, the "
                                        f"command says {sha256}")
    except requests.RequestException as exc:
        partial.unlink(missing_ok=True)
        raise BundleError("download", f"{url}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)


@dataclass(frozen=True)
class Bundle:
    path: Path
    version: str
    wheel: str
    lock: str

    @classmethod
    def open(cls, path: Path, version: str) -> Bundle:
        """The verified bundle at ``path``, which must be the release ``version``."""
        try:
            with tarfile.open(path, "r:") as tar:
                members = {m.name: m for m in tar.getmembers()}
                for member in members.values():
                    if not member.isfile() or "/" in member.name or member.name in ("", ".."):
                        raise BundleError("bad_bundle", f"member {member.name!r} is not a "
                                                        "plain file at the top")
                manifest = json.loads(_read(tar, members, MANIFEST))
                lock = _read(tar, members, LOCK).decode("utf-8")
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise BundleError("bad_bundle", f"not a readable bundle: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError("bad_bundle", f"manifest format is not {FORMAT}")
        if manifest.get("version") != version:
            raise BundleError("bad_bundle", f"bundle holds version {manifest.get('version')!r}"
                                            f", the command says {version!r}")
        wheel = manifest.get("wheel")
        if wheel != wheel_name(version) or wheel not in members:
            raise BundleError("bad_bundle", f"wheel {wheel!r} missing or not of {version}")
        if set(members) != {MANIFEST, LOCK, wheel}:
            raise BundleError("bad_bundle", f"unexpected members {sorted(members)}")
        return cls(path, version, wheel, lock)

    def missing_dependencies(self) -> list[str]:
        """Pins of the bundle's lock that the running environment does not have: such a
        bundle needs a new .deb, it cannot run beside on this venv."""
        missing = []
        for line in self.lock.splitlines():
            pin = _PIN.match(line.strip())
            if pin is None:
                continue
            name, wanted = pin[1], pin[2]
            try:
                have = installed_version(name)
            except PackageNotFoundError:
                have = None
            if have != wanted:
                missing.append(f"{name}=={wanted} (installed: {have})")
        return missing

    def extract_wheel(self, into: Path) -> None:
        """The wheel's files under ``into`` (which exists and is empty), each fsynced."""
        limit = self.path.stat().st_size * MAX_UNPACKED_FACTOR
        with tarfile.open(self.path, "r:") as tar:
            source = tar.extractfile(self.wheel)
            assert source is not None
            with zipfile.ZipFile(source) as wheel:  # a member of a plain tar can seek
                names = check_wheel(wheel, self.version, limit)
                for name in names:
                    target = into.joinpath(*PurePosixPath(name).parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with wheel.open(name) as src, open(target, "wb") as dst:
                        while block := src.read(CHUNK):
                            dst.write(block)
                        dst.flush()
                        os.fsync(dst.fileno())


def check_wheel(wheel: zipfile.ZipFile, version: str, limit: int) -> list[str]:
    """The names of the wheel's files, once every member is known safe: relative, no
    ``..``, no links, only the agent's packages and its dist-info, within ``limit`` bytes."""
    dist_info = f"broadcast_agent-{version}.dist-info"
    names = []
    total = 0
    for info in wheel.infolist():
        path = PurePosixPath(info.filename)
        if (info.filename.startswith("/") or "\\" in info.filename or ".." in path.parts
                or not path.parts or path.parts[0] not in (*TOP_LEVEL, dist_info)):
            raise BundleError("bad_bundle", f"wheel member {info.filename!r} is outside the "
                                            "agent's packages")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise BundleError("bad_bundle", f"wheel member {info.filename!r} is a link")
        total += info.file_size
        if total > limit:
            raise BundleError("bad_bundle", f"wheel unpacks to over {limit} bytes")
        if not info.is_dir():
            names.append(info.filename)
    if f"{dist_info}/METADATA" not in names:
        raise BundleError("bad_bundle", f"wheel has no {dist_info}/METADATA")
    return names


def _read(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    if name not in members:
        raise BundleError("bad_bundle", f"no {name}")
    stream = tar.extractfile(members[name])
    assert stream is not None
    return stream.read()
