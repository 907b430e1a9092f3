"""Stand-in executables that tests write and then run."""

from __future__ import annotations

import subprocess
from pathlib import Path


def write_script(path: Path, text: str) -> Path:
    """``path`` holding ``text``, executable. Written by a child process: a thread of the
    test's process may fork at any moment (the decoder pool's keeps a worker warm), and a
    child forked while this process held the file open for writing would keep it so until
    its exec, failing the script's own exec with ETXTBSY ("Text file busy")."""
    subprocess.run(["sh", "-c", 'cat > "$1" && chmod 755 "$1"', "sh", str(path)],
                   input=text.encode(), check=True)
    return path
