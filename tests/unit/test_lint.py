"""The code stays ruff-clean and mypy --strict clean: the checks run with the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.agentproc import REPO

BIN = Path(sys.executable).parent


def test_ruff() -> None:
    result = subprocess.run([BIN / "ruff", "check", "agent", "drivers", "tests", "bench"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run([BIN / "mypy"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
