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
from typing import Any, NoReturn

from agent.config.loader import ConfigError

# Imported to build the parser, so they import little at the top: a command's heavy
# modules are imported by its handler (--help and validate answer in well under 0.3 s).
COMMAND_MODULES = ("agent.service.run", "agent.config.loader", "agent.cli.technician",
                   "agent.cli.doctor.command", "agent.core.signing", "agent.cli.report")

DEFAULT_CONFIG = "/etc/broadcast-agent/agent.yaml"
CONFIG_ENV = "BROADCAST_AGENT_CONFIG"

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _VersionAction(argparse.Action):
    """argparse's "version" action, reading the version only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> NoReturn:
        from agent import __version__

        sys.stdout.write(f"{parser.prog} {__version__}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcast-agent",
        description="Commune loudspeaker controller: plays the broadcast schedule, relays FM, "
                    "reports over MQTT and HTTP.")
    config_help = f"main config file; conf.d/*.yaml beside it is merged on top " \
                  f"(default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"
    parser.add_argument("--config", metavar="PATH", help=config_help,
                        default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
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
