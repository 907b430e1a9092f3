"""`broadcast-agent --help` and `validate` import none of the daemon's heavy libraries (their
time is measured in bench/bench_footprint.py), and the daemon imports no character set
detector for requests (its RSS is measured there too)."""

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


DAEMON_PROBE = """\
import json, sys
from agent.service.lean_imports import without_charset_detection
without_charset_detection()
import agent.service.daemon
import requests
reply = requests.Response()
reply._content = json.dumps({"title": "Đài truyền thanh"}, ensure_ascii=False).encode()
print(json.dumps([sorted(m for m in ("charset_normalizer", "chardet") if sys.modules.get(m)),
                  reply.encoding, reply.text, reply.json()]))
"""


def test_the_daemon_imports_no_charset_detector_and_reads_utf8() -> None:
    done = subprocess.run([sys.executable, "-W", "error", "-c", DAEMON_PROBE],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    detectors, declared, text, doc = json.loads(done.stdout)
    assert detectors == []
    assert declared is None  # nothing declared: requests falls back to UTF-8 for the text
    assert text == '{"title": "Đài truyền thanh"}'
    assert doc == {"title": "Đài truyền thanh"}
