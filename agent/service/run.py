"""`broadcast-agent run`: loads the config and runs the daemon. Apart from
agent/service/daemon.py so that building the command line does not import the daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config.loader import ConfigError, load_config
from agent.service.lean_imports import without_charset_detection


def run_command(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    without_charset_detection()
    from agent.service.daemon import Daemon
    from agent.service.logs import configure_logging

    configure_logging(cfg.log_level)
    return Daemon(cfg).run()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the daemon (systemd runs this)")
    parser.set_defaults(func=run_command)
