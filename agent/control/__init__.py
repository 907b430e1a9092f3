"""The control thread: applies facts to the deciders and carries out their decisions."""
