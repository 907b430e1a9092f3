"""The systemd units: verified by this machine's systemd-analyze inside a temporary root
that holds the unit, systemd's own units and an executable at the ExecStart path, and the
hardening the unit asks for checked against what the agent really does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drivers.audio.base import AUDIO_RT_PRIORITY
from tests.support import media

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
AGENT_UNIT = SYSTEMD / "broadcast-agent.service"
PROVISION_UNIT = SYSTEMD / "broadcast-agent-provision.service"
VENV_BIN = Path("opt/broadcast-agent/venv/bin")


def _settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _root_with(tmp_path: Path, *units: Path) -> Path:
    """A root where systemd-analyze finds systemd's units, ours, /bin/kill and the venv."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copy("/usr/bin/kill", root / "usr/bin/kill")
    (root / VENV_BIN).mkdir(parents=True)
    for name in ("broadcast-agent", "python"):
        executable = root / VENV_BIN / name
        executable.write_text("#!/bin/sh\n")
        executable.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    return root


def _verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *names],
                          capture_output=True, text=True, timeout=60)


def test_units_verify(tmp_path: Path) -> None:
    root = _root_with(tmp_path, AGENT_UNIT, PROVISION_UNIT)
    result = _verify(root, AGENT_UNIT.name, PROVISION_UNIT.name)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr  # unknown keys are only warnings


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    root = _root_with(tmp_path, AGENT_UNIT)
    (root / VENV_BIN / "broadcast-agent").unlink()
    result = _verify(root, AGENT_UNIT.name)
    assert result.returncode != 0
    assert "/opt/broadcast-agent/venv/bin/broadcast-agent" in result.stderr


def test_agent_unit_settings() -> None:
    unit = _settings(AGENT_UNIT)
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == ["/opt/broadcast-agent/venv/bin/broadcast-agent run "
                                 "--config /etc/broadcast-agent/agent.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["WatchdogSec"] == ["30"]
    assert (unit["Restart"], unit["RestartSec"]) == (["always"], ["2"])
    assert unit["StartLimitIntervalSec"] == ["0"]
    assert unit["User"] == ["broadcast-agent"]
    assert unit["SupplementaryGroups"] == ["audio gpio plugdev"]
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["DeviceAllow"] == ["char-alsa rw", "char-gpiochip rw", "char-usb_device rw"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert unit["ReadWritePaths"] == ["/var/lib/broadcast-agent /var/cache/broadcast-agent"]
    # Only the audio threads go real-time, up to drivers/audio/base.py's priority.
    assert "CPUSchedulingPolicy" not in unit and "RestrictRealtime" not in unit
    assert unit["LimitRTPRIO"] == [str(AUDIO_RT_PRIORITY)]
    provision = _settings(PROVISION_UNIT)
    assert provision["Type"] == ["oneshot"]
    assert provision["ConditionPathExists"] == ["/boot/firmware/broadcast-agent.yaml"]
    assert provision["Before"] == ["broadcast-agent.service"]


def test_exposure_stays_low() -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25",
                             str(AGENT_UNIT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    exposure = re.search(r"Overall exposure level for broadcast-agent.service: ([\d.]+)",
                         result.stdout)
    assert exposure is not None, result.stdout
    assert float(exposure[1]) <= 2.0


DECODE_UNDER_MDWE = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {ctypes.get_errno()}")
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory was still allowed")
except OSError:
    pass
import numpy, vlc
frames = []
@vlc.CallbackDecorators.AudioPlayCb
def play(data, samples, count, pts):
    frames.append(count)
instance = vlc.Instance("--no-video", "--quiet", "--aout=dummy")
player = instance.media_player_new()
player.audio_set_callbacks(play, None, None, None, None, None)
player.audio_set_format("S16N", 48000, 2)
player.set_media(instance.media_new(sys.argv[1]))
player.play()
deadline = time.monotonic() + 20
while player.get_state() not in (vlc.State.Ended, vlc.State.Error) and time.monotonic() < deadline:
    time.sleep(0.02)
print(player.get_state(), sum(frames), float(numpy.fft.rfft(numpy.ones(8))[0].real))
"""


def test_decoding_works_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes is only safe if libvlc decoding through ctypes callbacks
    (libffi closures) and numpy need no W+X memory. Apply the kernel's equivalent
    (PR_SET_MDWE, which systemd uses where the kernel has it) and decode a real MP3."""
    silence = media.write_frames(tmp_path / "silence.wav", np.zeros((44100, 1), np.int16), 44100)
    mp3 = media.to_mp3(silence, tmp_path / "silence.mp3")
    result = subprocess.run([sys.executable, "-c", DECODE_UNDER_MDWE, str(mp3)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    state, frames, fft = result.stdout.split()
    assert state == "State.Ended"
    assert int(frames) >= 47_000  # one second at 48 kHz, resampled from 44.1 kHz
    assert float(fft) == 8.0


@pytest.mark.parametrize("drop_in", ["journald-broadcast-agent.conf", "watchdog.conf"])
def test_drop_ins_parse(drop_in: str) -> None:
    settings = _settings(SYSTEMD / drop_in)
    expected = {"journald-broadcast-agent.conf": ("Storage", ["volatile"]),
                "watchdog.conf": ("RuntimeWatchdogSec", ["15"])}[drop_in]
    assert settings[expected[0]] == expected[1]
