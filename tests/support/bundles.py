"""Release bundles (docs/updates.md) for the update tests and ``make bundle``: a wheel of
this checkout, or of a patched copy of it with a pretended version (setuptools-scm's
SETUPTOOLS_SCM_PRETEND_VERSION), packed by the agent's own ``write_bundle``; the
versions a test agent starts with; and an HTTP server that hands bundles out, slowly
if asked.

    python -m tests.support.bundles [OUT_DIR]     # make bundle: build/<name>.bundle
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.update.bundle import Bundle, write_bundle
from agent.update.state import UpdateState, save_state, update_root
from agent.update.store import VersionStore
from tests.support.agentproc import REPO

LOCK = REPO / "firmware-image" / "deb" / "requirements.lock"
SOURCES = ("agent", "drivers", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def build_wheel(src: Path, out: Path, version: str | None = None) -> Path:
    """``pip wheel`` of the project at ``src`` into ``out`` (its git version, or ``version``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if version is not None:
        env["SETUPTOOLS_SCM_PRETEND_VERSION"] = version
    # setuptools builds in the source's build/ and would ship files deleted since.
    shutil.rmtree(src / "build" / "lib", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(src)], env=env, check=True, timeout=300)
    [wheel] = out.glob("broadcast_agent-*.whl")
    return wheel


def patched_copy(dest: Path, patches: dict[str, tuple[str, str]]) -> Path:
    """The project's sources copied to ``dest``, each ``path: (old, new)`` replaced once."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    for path, (old, new) in patches.items():
        text = (dest / path).read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{path}: the patched text must occur once: {old!r}"
        (dest / path).write_text(text.replace(old, new), encoding="utf-8")
    return dest


def build_bundle(version: str, out_dir: Path, name: str | None = None,
                 patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """The bundle of this checkout as release ``version`` (with ``patches``), in ``out_dir``."""
    with tempfile.TemporaryDirectory() as work:
        src = patched_copy(Path(work) / "src", patches or {})
        wheel = build_wheel(src, Path(work) / "wheel", version)
        out_dir.mkdir(parents=True, exist_ok=True)
        return write_bundle(wheel, LOCK, out_dir / f"{name or version}.bundle", version)


def bundle_args(path: Path, version: str, url: str) -> dict[str, Any]:
    """The args of an ``update`` command for the bundle at ``path`` served at ``url``."""
    return {"version": version, "url": url, "size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def install_release(state_dir: Path, bundle: Path, version: str) -> None:
    """An agent whose state dir runs ``version`` from ``bundle``, as after an update."""
    root = update_root(state_dir)
    VersionStore(root).install(Bundle.open(bundle, version))
    save_state(root, UpdateState(current=version))


class BundleServer:
    """Serves the files of ``directory`` over HTTP on loopback, at ``rate`` bytes per second
    when given."""

    def __init__(self, directory: Path, rate: float | None = None) -> None:
        handler = functools.partial(_PacedHandler, directory=str(directory))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.rate = rate  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="bundle-server", daemon=True)

    def __enter__(self) -> BundleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"


class _PacedHandler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source: Any, outputfile: Any) -> None:
        rate = self.server.rate  # type: ignore[attr-defined]
        if rate is None:
            super().copyfile(source, outputfile)
            return
        chunk = 16 * 1024
        while block := source.read(chunk):
            try:
                outputfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                return  # the agent was killed mid-download, as the kill tests mean it to be
            time.sleep(len(block) / rate)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    """``make bundle``: the bundle of this checkout at its git version, into OUT_DIR."""
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build")
    with tempfile.TemporaryDirectory() as work:
        wheel = build_wheel(REPO, Path(work))
        version = wheel.name.split("-")[1]
        out_dir.mkdir(parents=True, exist_ok=True)
        bundle = write_bundle(wheel, LOCK, out_dir / f"broadcast-agent-{version}.bundle",
                              version)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    print(f"{bundle}\nversion {version}, size {bundle.stat().st_size}, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
