"""One run per key at a time: callers that ask for a key already being made wait for that run.

``nq.put`` of one value from three threads at once uploaded it three times; the two copies
nothing named stayed in the object store for ``NAQ_STATUS_TTL``. The run belongs to the caller
that started it (cancelling that caller cancels it); a waiter whose run ended without success
(cancelled, failed) makes its own.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Hashable

__all__ = ["SingleFlight"]


class SingleFlight:
    """``await flights.run(key, make)``: ``make()`` awaited once per key among concurrent callers.
    Per event loop: keep one per connection (a broker lives on one loop)."""

    def __init__(self) -> None:
        self._runs: dict[Hashable, asyncio.Task] = {}

    async def run(self, key: Hashable, make: Callable[[], Awaitable[None]]) -> None:
        while (other := self._runs.get(key)) is not None:
            await asyncio.wait({other})  # (a cancel of this waiter leaves the other's run alone)
            if not other.cancelled() and other.exception() is None:
                return
        task = asyncio.ensure_future(make())
        self._runs[key] = task
        try:
            await task
        finally:
            if self._runs.get(key) is task:
                del self._runs[key]
