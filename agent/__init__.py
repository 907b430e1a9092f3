"""broadcast-agent: the commune loudspeaker controller daemon."""


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
