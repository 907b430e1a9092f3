"""broadcast-agent: the commune loudspeaker controller daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Set at install time from the git tag (setuptools-scm, see pyproject.toml).
    __version__ = version("broadcast-agent")
except PackageNotFoundError:  # a source tree on PYTHONPATH that was never installed
    __version__ = "0.0.0+unknown"
