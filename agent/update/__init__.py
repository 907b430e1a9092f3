"""Signed over-the-air updates with automatic rollback (docs/updates.md).

Nothing here may import more than the standard library at module level in ``state`` and
``launcher``: the launcher runs them before the chosen version's heavy imports."""
