"""broadcast-agent: the commune loudspeaker controller daemon."""

__version__ = "0.1.0"
