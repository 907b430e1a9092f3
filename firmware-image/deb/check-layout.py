#!/usr/bin/env python3
"""Checks a built .deb for the layout Debian and Raspberry Pi OS users expect (run by
``make deb`` after lintian): ``check-layout.py PACKAGE.deb``. Exits non-zero naming the
first thing that is not where it belongs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def check(deb: Path, tmp_path: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    entries = {line.split(None, 5)[5] for line in listing.splitlines()}
    for expected in (
        "./usr/bin/broadcast-agent -> /opt/broadcast-agent/venv/bin/broadcast-agent",
        "./opt/broadcast-agent/venv/bin/python3 -> /usr/bin/python3",
        "./lib/systemd/system/broadcast-agent.service",
        "./lib/systemd/system/broadcast-agent-provision.service",
        "./etc/broadcast-agent/agent.yaml",
        "./usr/share/doc/broadcast-agent/copyright",
        "./usr/share/doc/broadcast-agent/field.md",
    ):
        assert expected in entries, f"{deb}: no {expected}"
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert "/etc/broadcast-agent/agent.yaml\n" in (control / "conffiles").read_text()
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    venv = tree / "opt/broadcast-agent/venv"
    # Built in a temporary directory, the venv names only its installed path.
    script = (venv / "bin/broadcast-agent").read_text()
    assert script.startswith("#!/opt/broadcast-agent/venv/bin/python\n")
    assert "/tmp" not in (venv / "pyvenv.cfg").read_text()
    # soundfile loads Debian's libsndfile, not one of its own (build-deb.sh).
    bundled = list(venv.glob("lib/python3*/site-packages/_soundfile_data"))
    assert not bundled, f"{deb}: soundfile bundles a libsndfile: {bundled}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        check(Path(sys.argv[1]), Path(scratch))
    print(f"{sys.argv[1]}: layout checked")
