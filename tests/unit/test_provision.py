"""First-boot provisioning on a temporary root: tmp_path holds the boot partition and /etc."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.provision import Owners, main, provision
from agent.config.loader import load_config

NOBODY = Owners(service_uid=None, service_gid=None)
QUARANTINE = "var/lib/broadcast-agent/quarantine"
CONFIG = """\
device_id: xa-thu-nghiem-01
source:
  url: https://nguon.example.invalid/api/v1
  token_file: source.token
mqtt:
  brokers: []
  password_file: mqtt.password
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    return tmp_path


def _leave_on_boot(root: Path, config: str, secrets: dict[str, str]) -> Path:
    boot = root / "boot/firmware"
    (boot / "broadcast-agent.yaml").write_text(config)
    if secrets:
        (boot / "broadcast-agent-secrets").mkdir()
    for name, value in secrets.items():
        (boot / "broadcast-agent-secrets" / name).write_text(value)
    return boot


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_and_secrets_move_to_etc(root: Path) -> None:
    boot = _leave_on_boot(root, CONFIG, {"source.token": "s3cret\n", "mqtt.password": "pw\n"})
    etc = root / "etc/broadcast-agent"

    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 0

    assert (etc / "agent.yaml").read_text() == CONFIG
    assert _mode(etc / "agent.yaml") == 0o640
    assert _mode(etc / "source.token") == 0o600
    assert _mode(etc / "mqtt.password") == 0o600
    assert _mode(etc) == 0o750
    assert sorted(p.name for p in boot.iterdir()) == []
    assert sorted(p.name for p in etc.iterdir()) == ["agent.yaml", "mqtt.password",
                                                     "source.token"]
    installed = load_config(etc / "agent.yaml")
    assert installed.source.token == "s3cret"
    assert installed.mqtt.password == "pw"


def test_invalid_config_stays_on_boot_with_its_errors(root: Path) -> None:
    bad = CONFIG.replace("device_id: xa-thu-nghiem-01", "device_id: xa thu/nghiem") \
        + "audio:\n  volume_defualt: 70\n"
    boot = _leave_on_boot(root, bad, {"source.token": "s3cret\n"})
    etc = root / "etc/broadcast-agent"

    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 2

    assert (boot / "broadcast-agent.yaml").read_text() == bad
    assert not (boot / "broadcast-agent-secrets").exists()  # secrets never stay behind
    (kept,) = (root / QUARANTINE).iterdir()
    assert (kept / "source.token").read_text() == "s3cret\n"
    assert _mode(root / QUARANTINE) == _mode(kept) == 0o700
    assert _mode(kept / "source.token") == 0o600
    errors = (boot / "broadcast-agent.error.txt").read_text().splitlines()
    assert errors[-1].startswith(f"note: the 1 file(s) of broadcast-agent-secrets/ were moved "
                                 f"to {kept} (root only) and wiped")
    source = boot / "broadcast-agent.yaml"
    assert any(e.startswith(f"{source}:1: device_id: ") for e in errors), errors
    assert any(e.startswith(f"{source}:9: audio.volume_defualt: unknown key") for e in errors)
    assert any("mqtt.password_file" in e for e in errors), errors  # the secret is missing
    assert not (etc / "agent.yaml").exists()
    assert [p.name for p in etc.iterdir()] == []  # no staging left behind


def test_fixed_config_replaces_the_old_one_and_clears_the_error(root: Path) -> None:
    etc = root / "etc/broadcast-agent"
    boot = _leave_on_boot(root, "device_id: [", {})
    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 2
    assert (boot / "broadcast-agent.error.txt").exists()

    secrets = {"source.token": "a\n", "mqtt.password": "b\n"}
    (boot / "broadcast-agent.yaml").unlink()
    _leave_on_boot(root, CONFIG, secrets)
    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 0
    assert list(boot.iterdir()) == []


def test_new_config_may_use_secrets_installed_earlier(root: Path) -> None:
    etc = root / "etc/broadcast-agent"
    boot = _leave_on_boot(root, CONFIG, {"source.token": "one\n", "mqtt.password": "pw\n"})
    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 0

    _leave_on_boot(root, CONFIG.replace("xa-thu-nghiem-01", "xa-thu-nghiem-02"), {})
    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 0
    assert load_config(etc / "agent.yaml").device_id == "xa-thu-nghiem-02"
    assert load_config(etc / "agent.yaml").source.token == "one"


def test_conf_d_overrides_are_validated_with_the_new_config(root: Path) -> None:
    etc = root / "etc/broadcast-agent"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d/10-site.yaml").write_text("audio:\n  default_volume: 400\n")
    boot = _leave_on_boot(root, CONFIG, {"source.token": "a\n", "mqtt.password": "b\n"})

    assert provision(boot, etc, NOBODY, quarantine=root / QUARANTINE) == 2
    errors = (boot / "broadcast-agent.error.txt").read_text()
    assert f"{etc / 'conf.d/10-site.yaml'}:2: audio.default_volume:" in errors


def test_nothing_to_do_without_a_file_on_boot(root: Path) -> None:
    etc = root / "etc/broadcast-agent"
    assert provision(root / "boot/firmware", etc, NOBODY, quarantine=root / QUARANTINE) == 0
    assert not etc.exists()


def test_owners_come_from_the_target_root(root: Path) -> None:
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "broadcast-agent:x:4242:4343::/nonexistent:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nbroadcast-agent:x:4343:\n")
    _leave_on_boot(root, CONFIG, {"source.token": "a\n", "mqtt.password": "b\n"})

    assert main(["--root", str(root), "--boot", "/boot/firmware",
                 "--etc", "/etc/broadcast-agent"]) == 0

    etc = root / "etc/broadcast-agent"
    config, secret = (etc / "agent.yaml").stat(), (etc / "source.token").stat()
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        assert (config.st_uid, config.st_gid) == (0, 4343)
        assert (secret.st_uid, secret.st_gid) == (4242, 4343)
    assert stat.S_IMODE(config.st_mode) == 0o640


def test_runs_as_a_module(root: Path) -> None:
    boot = _leave_on_boot(root, "device_id: x\n", {})
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.provision", "--boot", str(boot),
         "--etc", str(root / "etc/broadcast-agent"), "--root", "/"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "broadcast-agent.yaml:1: source.url: required key missing" in result.stderr
