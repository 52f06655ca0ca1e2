"""``naq``: worker, server, scheduler and admin commands (compatible with naq's CLI).

Each command module registers its subcommands; a handler returns the exit code.
An unreachable server or bad input ends in one clear line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..core.errors import ConfigurationError, NaqException
from .common import OneLineParser, UsageError

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = ("naq_nb.cli.worker_cmds", "naq_nb.cli.admin_cmds", "naq_nb.cli.scheduler_cmds",
                    "naq_nb.cli.dashboard_cmds")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="naq", description="naq_nb: a job queue on NATS JetStream.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigurationError) as exc:  # bad input: the user fixes the command, not us
        print(f"naq: error: {exc}", file=sys.stderr)
        return 2
    except NaqException as exc:
        print(f"naq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
