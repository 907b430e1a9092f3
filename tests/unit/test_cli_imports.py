"""`broadcast-agent --help` and `validate` import none of the daemon's heavy libraries (their
time is measured in bench/bench_footprint.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "requests", "paho", "cryptography", "prometheus_client", "vlc",
         "soundfile", "importlib.metadata")
PROBE = ("import json, sys\n"
         "from agent.cli.main import main\n"
         "try:\n"
         "    code = main(sys.argv[1:])\n"
         "except SystemExit as exit:\n"
         "    code = exit.code\n"
         f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]),"
         " file=sys.stderr)\n")


def shipped_config(folder: Path) -> Path:
    """config/agent.yaml with the secret files a provisioned controller has beside it."""
    config = folder / "agent.yaml"
    shutil.copy(REPO / "config" / "agent.yaml", config)
    for name in ("source.token", "mqtt.password"):
        (folder / name).write_text("secret\n")
        (folder / name).chmod(0o600)
    (folder / "province-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return config


@pytest.mark.parametrize("argv", [["--help"], ["validate"], ["run", "--help"]])
def test_help_and_validate_import_no_heavy_library(tmp_path, argv):
    argv = [*argv, "--config", str(shipped_config(tmp_path))]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=60)
    code, imported = json.loads(done.stderr.strip().splitlines()[-1])
    assert code == 0, done.stderr
    assert imported == []
