"""``naq``: worker, server, scheduler and admin commands (compatible with naq's CLI).

Each command module registers its subcommands; a handler returns the exit code.
An unreachable server or bad input ends in one clear line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from ..core.errors import ConfigurationError, NaqException
from .common import OneLineParser, UsageError, terminal_text

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = (
    "naq_nb.cli.worker_cmds",
    "naq_nb.cli.admin_cmds",
    "naq_nb.cli.scheduler_cmds",
    "naq_nb.cli.dashboard_cmds",
)


_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_HELP = "logging level: DEBUG, INFO, WARNING, ERROR, CRITICAL (TRACE = DEBUG); default $NAQ_LOG_LEVEL or INFO"


def _version() -> str:
    from .. import __version__

    return f"naq (naq_nb) {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="naq", description="naq_nb: a job queue on NATS JetStream.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--log-level", "-l", default=None, help=_LOG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    # naq puts --log-level/-l on every command (`naq worker default --log-level DEBUG`); SUPPRESS
    # keeps a value given before the command when none is given after it.
    for p in sub.choices.values():
        p.add_argument("--log-level", "-l", default=argparse.SUPPRESS, help=_LOG_HELP)
    return parser


def log_level(given: str | None) -> int:
    """The level from --log-level, else $NAQ_LOG_LEVEL (naq's variable), else INFO."""
    name = (given or os.environ.get("NAQ_LOG_LEVEL") or "INFO").strip().upper()
    if name not in _LEVELS:
        src = "--log-level" if given else "NAQ_LOG_LEVEL"
        raise ValueError(f"{src} must be one of {', '.join(_LEVELS)}, not {name!r}")
    return logging.DEBUG if name == "TRACE" else getattr(logging, name)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:  # (None: started with stdout closed; print() writes nowhere)
                sys.stdout.flush()  # now, not at exit: a short output meets a closed pipe here, where it is caught
    except BrokenPipeError:
        return _reader_left()


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse gives a '*' positional everything it gets before the first option, so the ids in
        # `naq failed requeue -u URL ID` come back unparsed: a command that takes them gets them.
        if hasattr(args, "refs") and not any(e.startswith("-") for e in extra):
            args.refs = [*args.refs, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        level = log_level(args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigurationError) as exc:  # bad input: the user fixes the command, not us
        print(f"naq: error: {terminal_text(exc, lines=True)}", file=sys.stderr)
        return 2
    except NaqException as exc:
        print(f"naq: error: {terminal_text(exc, lines=True)}", file=sys.stderr)  # it may quote stored text
        return 1
    except KeyboardInterrupt:
        return 130


def _reader_left() -> int:
    """``naq failed | head``: the reader closed the pipe. That is no error of ours to show; stdout
    goes to /dev/null so that the interpreter's own flush at exit does not fail (and print) again.
    128 + SIGPIPE is the code a shell reports for a writer that the closed pipe ended."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
