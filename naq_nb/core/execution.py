"""Calling a job's function: async functions on the loop, sync ones in a thread pool.

Timeouts: an async function is cancelled at its timeout. A sync function cannot
be interrupted safely in CPython, so at its timeout the job is failed (and
retried per its policy) and its thread is left to finish on its own; the
result it eventually returns is discarded. Keep sync jobs cooperative (check
``naq_nb.current_job()``) or run CPU-bound work in worker processes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable

from .context import JobContext, bind, unbind
from .errors import JobTimeoutError

__all__ = ["call_job", "JobThreads"]


class JobThreads(ThreadPoolExecutor):
    """The worker's thread pool for sync jobs, counting calls still running
    (a sync job past its timeout or a forced stop keeps its thread until it returns)."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="naq-job")
        self._active = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        def counted():
            with self._lock:
                self._active += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._active -= 1
        return super().submit(counted)

    @property
    def active(self) -> int:
        return self._active


async def call_job(fn: Callable[..., Any], args: tuple, kwargs: dict, *, ctx: JobContext,
                   executor: Executor, timeout: float | None) -> Any:
    """Run ``fn(*args, **kwargs)`` with ``ctx`` as the current job; raise JobTimeoutError at ``timeout``."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        token = bind(ctx)
        try:
            coro = fn(*args, **kwargs)
        finally:
            unbind(token)
        aw = asyncio.ensure_future(_with_ctx(coro, ctx))
    else:
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context()
        run.run(bind, ctx)
        aw = loop.run_in_executor(executor, functools.partial(run.run, _call_sync, fn, args, kwargs))
    try:
        if timeout is None:
            result = await aw
        else:
            result = await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise JobTimeoutError(f"job {ctx.job_id} timed out after {timeout:g}s") from None
    if inspect.isawaitable(result):  # a sync function that returned a coroutine
        result = await result
    return result


async def _with_ctx(coro: Any, ctx: JobContext) -> Any:
    token = bind(ctx)
    try:
        return await coro
    finally:
        unbind(token)


def _call_sync(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)
