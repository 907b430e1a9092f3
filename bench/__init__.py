"""Benchmarks of broadcast-agent (see docs/benchmarks.md)."""
