"""The `broadcast-agent` command: global options, then one subcommand per feature.

Each module named in COMMAND_MODULES defines `register(subparsers)`, which adds its
subcommands with `set_defaults(func=handler)`; `handler(args) -> int` returns the exit
code. Every subcommand accepts `--config PATH` (added here: a module must not add it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from agent import __version__
from agent.config.loader import ConfigError

COMMAND_MODULES = ("agent.service.daemon", "agent.config.loader", "agent.cli.technician",
                   "agent.cli.doctor", "agent.core.signing", "agent.cli.report")

DEFAULT_CONFIG = "/etc/broadcast-agent/agent.yaml"
CONFIG_ENV = "BROADCAST_AGENT_CONFIG"

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcast-agent",
        description="Commune loudspeaker controller: plays the broadcast schedule, relays FM, "
                    "reports over MQTT and HTTP.")
    config_help = f"main config file; conf.d/*.yaml beside it is merged on top " \
                  f"(default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"
    parser.add_argument("--config", metavar="PATH", help=config_help,
                        default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for subparser in subparsers.choices.values():
        # SUPPRESS: when given only before the command, the subparser must not reset it.
        subparser.add_argument("--config", metavar="PATH", help=config_help,
                               default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        exit_code: int = args.func(args)
    except ConfigError as error:
        for line in error.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    return exit_code
