"""Clean-up after a cancel: a Ctrl-C in a cell (``run_sync`` cancels the call's task on naq_nb's loop),
a cancelled task, a worker stopping.

The clean-up runs in a task of its own (:func:`run_to_end`): the cancelled task has
``cancelling() > 0``, in which ``asyncio.timeout`` (Python 3.11) turns its own expiry into one more
cancel, and a second Ctrl-C must not cut an undo half-way. It is bounded, and never raises: a server
that is gone leaves what it could not undo to the buckets' age limits, said in a log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

__all__ = ["run_to_end", "cancel_unheard"]

log = logging.getLogger("naq_nb")

# Clean-ups under way: a task nothing references may be collected before it ends.
_running: set[asyncio.Task] = set()


async def run_to_end(coro: Coroutine[Any, Any, Any], bound: float, what: str) -> None:
    """Run ``coro`` within ``bound`` seconds in a task of its own and wait for it. A cancel of the
    caller meanwhile stops the wait, not the clean-up. Its failure or time-out is logged, not raised."""
    task = asyncio.ensure_future(_bounded(coro, bound, what))
    _running.add(task)
    task.add_done_callback(_running.discard)
    await asyncio.shield(task)


async def _bounded(coro: Coroutine[Any, Any, Any], bound: float, what: str) -> None:
    try:
        await asyncio.wait_for(coro, bound)
    except asyncio.TimeoutError:
        log.warning("%s: not done within %gs; what is left goes with the bucket's age limit", what, bound)
    except Exception as exc:  # best effort: the cancel that called for it is what the caller hears
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)


def cancel_unheard() -> bool:
    """Whether this task was asked to stop and the request went unheard: on Python 3.11,
    ``asyncio.wait_for`` (round each request in nats-py) returns its result when a cancel lands as
    its future completes: 24 of 40 cancels of a 100 MB upload were lost so, and the job sent."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
