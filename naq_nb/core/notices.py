"""Messages a user must see even with no logging set up: an ended session's lost jobs, what an
interrupted call undid. The package's NullHandler silences Python's last resort, so such a
message is also printed to stderr when no handler would show it."""

from __future__ import annotations

import logging
import sys

__all__ = ["say_loudly"]


def say_loudly(logger: logging.Logger, message: str, level: int = logging.ERROR) -> None:
    """Log ``message`` at ``level``, and print it to stderr when no handler shows it."""
    logger.log(level, "%s", message)
    if not _shown(logger, level):
        print(f"naq_nb: {logging.getLevelName(level).lower()}: {message}", file=sys.stderr, flush=True)


def _shown(logger: logging.Logger, level: int) -> bool:
    """Whether a record at ``level`` reaches a handler that is not a NullHandler."""
    lg: logging.Logger | None = logger
    while lg is not None:
        if any(not isinstance(h, logging.NullHandler) and level >= h.level for h in lg.handlers):
            return True
        lg = lg.parent if lg.propagate else None
    return False
