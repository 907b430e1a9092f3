"""Deciders: pure state machines on an injected clock, and their vocabulary."""
