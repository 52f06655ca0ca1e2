"""A job's traceback and exception type names, as recorded (no NATS imports: job processes use it)."""

from __future__ import annotations

import os
import traceback

__all__ = ["user_traceback", "exception_type_names"]

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


def exception_type_names(exc: BaseException) -> list[str]:
    names = []
    for cls in type(exc).__mro__:
        if cls in (BaseException, object):
            break
        names.append(cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}")
    return names
