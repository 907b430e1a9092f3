"""The .deb of `make deb` (firmware-image/deb/build-deb.sh).

The metadata it writes (version, control, conffiles, md5sums, maintainer scripts) is checked
on a small tree in well under a second. The real build (about a minute: a venv with numpy,
pyalsaaudio compiled) runs only with BROADCAST_DEB_BUILD=1.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.agentproc import REPO

BUILD_DEB = REPO / "firmware-image/deb/build-deb.sh"
MAINTAINER = "Test Maintainer <test@example.org>"


def sourced(command: str, *args: str) -> str:
    """Runs a function of build-deb.sh, sourced, and returns its standard output."""
    script = f'. "$1"; shift; {command} "$@"'
    result = subprocess.run(["bash", "-c", script, "bash", str(BUILD_DEB), *args],
                            capture_output=True, text=True, check=True, timeout=30)
    return result.stdout


def deb_fields(deb: Path) -> dict[str, str]:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                            check=True).stdout
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
            for line in fields.splitlines() if line and not line.startswith(" ")}


@pytest.mark.parametrize(("pep440", "debian"), [
    ("0.2.0", "0.2.0"),
    ("0.2.1.dev3+g4fb898a1d", "0.2.1~dev3+g4fb898a1d"),  # "b8", "a1" of the hash stay
    ("1.0rc1", "1.0~rc1"),
    ("1.0a2.dev1", "1.0~a2~dev1"),
    ("1.0.post1", "1.0.post1"),
])
def test_pep440_versions_map_to_debian_versions_that_sort_the_same(pep440: str,
                                                                   debian: str) -> None:
    assert sourced("deb_version", pep440).strip() == debian


def test_debian_versions_sort_dev_builds_before_their_release() -> None:
    ordered = ["0.2.1~dev3+gabc", "0.2.1~rc1", "0.2.1", "0.2.1.post1"]
    for older, newer in itertools.pairwise(ordered):
        subprocess.run(["dpkg", "--compare-versions", older, "lt", newer], check=True)


def test_debian_dir_lists_etc_as_conffiles_and_builds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/broadcast-agent/conf.d").mkdir(parents=True)
    (root / "etc/broadcast-agent/agent.yaml").write_text("device_id: d1\n")
    (root / "etc/broadcast-agent/conf.d/README.md").write_text("overrides\n")
    (root / "usr/share/doc/broadcast-agent").mkdir(parents=True)
    (root / "usr/share/doc/broadcast-agent/copyright").write_text("GPL-3+\n")

    sourced("write_debian_dir", str(root), "0.2.1~dev3+gabc", "arm64", MAINTAINER)

    debian = root / "DEBIAN"
    assert (debian / "conffiles").read_text().splitlines() == [
        "/etc/broadcast-agent/agent.yaml", "/etc/broadcast-agent/conf.d/README.md"]
    md5sums = (debian / "md5sums").read_text()
    assert "  usr/share/doc/broadcast-agent/copyright\n" in md5sums
    assert "DEBIAN" not in md5sums
    for script in ("postinst", "prerm", "postrm"):
        path = debian / script
        assert os.access(path, os.X_OK)
        subprocess.run(["sh", "-n", str(path)], check=True)

    deb = tmp_path / "test.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    fields = deb_fields(deb)
    assert fields["Package"] == "broadcast-agent"
    assert fields["Version"] == "0.2.1~dev3+gabc"
    assert fields["Architecture"] == "arm64"
    assert fields["Maintainer"] == MAINTAINER
    assert int(fields["Installed-Size"]) > 0
    assert "python3 (<< 3.12)" in fields["Depends"]  # the venv is tied to Python 3.11
    assert "libsndfile1 (>= 1.2.0)" in fields["Depends"]  # soundfile is built to load it


def test_postinst_makes_the_service_user_and_enables_both_units() -> None:
    postinst = (REPO / "firmware-image/deb/postinst").read_text()
    assert "adduser --quiet --system --group --home /var/lib/broadcast-agent" in postinst
    assert 'UNITS="broadcast-agent.service broadcast-agent-provision.service"' in postinst
    assert 'deb-systemd-helper enable "$unit"' in postinst
