"""The daemon: wiring, threads, signals, systemd notify."""
