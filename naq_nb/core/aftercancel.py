"""Clean-up after a cancel: a Ctrl-C in a cell (``run_sync`` cancels the call's task on naq_nb's loop),
a cancelled task, a worker stopping.

The clean-up runs in a task of its own (:func:`run_to_end`): the cancelled task has
``cancelling() > 0``, in which ``asyncio.timeout`` (Python 3.11) turns its own expiry into one more
cancel, and a second Ctrl-C must not cut an undo half-way. It is bounded, and never raises: a server
that is gone leaves what it could not undo to the buckets' age limits, said in a log line.

The call that was cancelled has often returned already (a blocking call returns at the Ctrl-C), so
nothing waits for its clean-up but naq_nb's loop: before a process closes that loop's connections
(at interpreter exit, ``nq.local()``'s stop) it waits for them with :func:`settle`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

__all__ = ["run_to_end", "start_to_end", "cancel_unheard", "settle"]

log = logging.getLogger("naq_nb")

# Clean-ups under way: a task nothing references may be collected before it ends.
_running: set[asyncio.Task] = set()


async def run_to_end(coro: Coroutine[Any, Any, Any], bound: float, what: str) -> None:
    """Run ``coro`` within ``bound`` seconds in a task of its own and wait for it. A cancel of the
    caller meanwhile stops the wait, not the clean-up. Its failure or time-out is logged, not raised."""
    await asyncio.shield(start_to_end(coro, bound, what))


def start_to_end(coro: Coroutine[Any, Any, Any], bound: float, what: str) -> asyncio.Task:
    """:func:`run_to_end` without the wait: the task, to ``await asyncio.shield(...)`` once other
    clean-ups are started too (each started before any is waited for: a second cancel during one
    wait must not leave the others unstarted)."""
    task = asyncio.ensure_future(_bounded(coro, bound, what))
    task.set_name(what)  # (named in what settle() says is left)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def _bounded(coro: Coroutine[Any, Any, Any], bound: float, what: str) -> None:
    try:
        await asyncio.wait_for(coro, bound)
    except asyncio.TimeoutError:
        log.warning("%s: not done within %gs; what is left goes with the bucket's age limit", what, bound)
    except Exception as exc:  # best effort: the cancel that called for it is what the caller hears
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)


async def settle(bound: float) -> list[str]:
    """Wait within ``bound`` seconds for the clean-ups under way on this loop, and for its tasks still
    unwinding a cancel: an interrupted call that has not started its clean-up yet (it first waits
    for the acknowledgements in flight) is one of those. Returns the names of what is left."""
    loop = asyncio.get_running_loop()
    end = loop.time() + bound
    me = asyncio.current_task()
    while True:
        # (looked for again after each end: a task unwinding a cancel may start a clean-up)
        busy = {t for t in asyncio.all_tasks() if t is not me and (t in _running or t.cancelling())}
        left = end - loop.time()
        if not busy or left <= 0:
            return sorted({t.get_name() if t in _running else _call_name(t) for t in busy})
        await asyncio.wait(busy, timeout=left, return_when=asyncio.FIRST_COMPLETED)


def _call_name(task: asyncio.Task) -> str:
    coro = task.get_coro()
    return f"the interrupted call {getattr(coro, '__qualname__', None) or task.get_name()}"


def cancel_unheard() -> bool:
    """Whether this task was asked to stop and the request went unheard: on Python 3.11,
    ``asyncio.wait_for`` (round each request in nats-py) returns its result when a cancel lands as
    its future completes: 24 of 40 cancels of a 100 MB upload were lost so, and the job sent."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
