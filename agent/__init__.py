"""broadcast-agent: the commune loudspeaker controller daemon."""

import os

# numpy's and scipy's OpenBLAS start a worker thread per core at import, and a worker
# spins while it waits for work: the FM de-emphasis's small matrix products every few ms
# kept a second core at 100 % while relaying (bench_footprint: 114 % against 18 %). One
# BLAS thread, set before any numpy import of the agent and of its child processes (they
# inherit it); a technician may still set the variable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def __getattr__(name: str) -> str:
    # __version__ is read from the installed metadata on first use: importlib.metadata
    # costs ~35 ms and ~4 MB, which `broadcast-agent --help` and `validate` do not need.
    if name != "__version__":
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        # Set at install time from the git tag (setuptools-scm, see pyproject.toml).
        found = version("broadcast-agent")
    except PackageNotFoundError:  # a source tree on PYTHONPATH that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
