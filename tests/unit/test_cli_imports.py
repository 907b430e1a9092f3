"""`broadcast-agent --help` and `validate` import none of the daemon's heavy libraries (their
time is measured in bench/bench_footprint.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.shipped import provisioned_copy

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


@pytest.mark.parametrize("argv", [["--help"], ["validate"], ["run", "--help"]])
def test_help_and_validate_import_no_heavy_library(tmp_path: Path, argv: list[str]) -> None:
    argv = [*argv, "--config", str(provisioned_copy(tmp_path))]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=60)
    code, imported = json.loads(done.stderr.strip().splitlines()[-1])
    assert code == 0, done.stderr
    assert imported == []
