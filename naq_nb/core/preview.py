"""A short, cheap summary of a job's arguments for its status record (dashboards show it).

Never the full ``repr``: a 20 MB DataFrame's repr is costly and useless here.
Scalars and short strings are shown; containers and objects by type and size.
"""

from __future__ import annotations

from typing import Any

__all__ = ["args_preview"]

_LIMIT = 200


def _one(v: Any) -> str:
    if v is None or isinstance(v, (bool, int, float, complex)):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else repr(v[:37]) + "…"
    if isinstance(v, (bytes, bytearray)):
        return f"{type(v).__name__}[{len(v)}]"
    if isinstance(v, (list, tuple, set, frozenset, dict)):
        return f"{type(v).__name__}[{len(v)}]"
    shape = getattr(v, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(v).__name__}{shape}"
    return type(v).__name__


def args_preview(args: tuple, kwargs: dict) -> str:
    """``3, 'a', x=list[10], df=DataFrame(1000, 3)``, at most 200 characters."""
    text = ", ".join([_one(a) for a in args] + [f"{k}={_one(v)}" for k, v in kwargs.items()])
    return text if len(text) <= _LIMIT else text[: _LIMIT - 1] + "…"
