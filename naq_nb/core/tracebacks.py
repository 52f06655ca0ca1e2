"""A job's traceback and exception type names, as recorded (no NATS imports: job processes use it)."""

from __future__ import annotations

import os
import traceback

__all__ = ["user_traceback", "exception_type_names", "bounded_failure_text", "error_line"]

_MAX_TRACEBACK = 32_000
_MAX_ERROR = 4_000  # characters of a failure's error line its records keep (a pickled exception travels whole)

_INTERNAL = (
    os.sep + os.path.join("naq_nb", "core") + os.sep,
    os.path.join("concurrent", "futures"),
    os.sep + "asyncio" + os.sep,
)


def user_traceback(exc: BaseException) -> str:
    """The traceback without naq_nb's and asyncio's own frames: what the user's code did."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not any(m in f.filename for m in _INTERNAL)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def error_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``. Job code's exception classes can do anything: a ``__str__``
    that raises is named as such here, never raised on (it would pass for the worker's own error)."""
    try:
        text = str(exc)
    except BaseException as err:  # SystemExit too: it is the exception's text that failed, nothing else
        text = f"<its str() raised {type(err).__name__}>"
    return f"{type(exc).__name__}: {text}"


def exception_type_names(exc: BaseException) -> list[str]:
    names = []
    for cls in type(exc).__mro__:
        if cls in (BaseException, object):
            break
        names.append(cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}")
    return names


def bounded_failure_text(error: str, tb: str, max_payload: int) -> tuple[str, str]:
    """A failure's error line and traceback cut to fit its records (the status, the failed-stream copy)
    in one message each: the error's start and the traceback's end, the parts that say what happened.
    Uncut, an exception with a message near ``max_payload`` could not be recorded at all, and the job
    was run again until it counted as lost."""
    err_cap, tb_cap = min(_MAX_ERROR, max_payload // 16), min(_MAX_TRACEBACK, max_payload // 4)
    if len(error) > err_cap:
        error = f"{error[:err_cap]}... ({len(error) - err_cap:,} more characters)"
    if len(tb) > tb_cap:
        tb = "...\n" + tb[-tb_cap:]
    return error, tb
