"""`broadcast-agent doctor`: `command.py` (the subcommand: runs the checks in order and
reports them), `results.py` (what a check returns, as translatable messages), and the checks
by subsystem: `audio.py` (output, mixer, amplifier), `sdr.py`, `network.py` (source system,
MQTT brokers), `machine.py` (clock, disk, directories, service); `access.py` says how the
user running it may reach a device."""
