"""Durable state: the SQLite store, the outbox journal, power-cut safe files."""
