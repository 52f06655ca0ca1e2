"""Sync and async forms from one coroutine.

``@twin`` marks an ``async def`` that must run on the background loop (it uses
the client's connection). The class decorator :func:`with_twins` then exposes
``name`` (awaitable from any loop) and ``name_sync`` (blocking, from any thread
or inside a running loop).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from .loop import run_async, run_sync

__all__ = ["twin", "with_twins"]


def twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn.__naq_twin__ = True  # type: ignore[attr-defined]
    return fn


def with_twins(cls: type) -> type:
    for name, fn in list(vars(cls).items()):
        if not getattr(fn, "__naq_twin__", False):
            continue
        setattr(cls, name, _async_form(fn))
        setattr(cls, f"{name}_sync", _sync_form(fn, name))
    return cls


def _async_form(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_async(fn(self, *args, **kwargs))
    return method


def _sync_form(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return run_sync(fn(self, *args, **kwargs))
    method.__name__ = f"{name}_sync"
    method.__qualname__ = method.__qualname__.rsplit(".", 1)[0] + f".{name}_sync"
    method.__doc__ = f"Blocking form of :meth:`{name}` (works inside a running event loop too).\n\n{fn.__doc__ or ''}"
    return method
