"""The broadcast-agent command and the technician's subcommands."""
