"""One run per key at a time: callers that ask for a key already being made wait for that run.

``nq.put`` of one value from three threads at once uploaded it three times; the two copies
nothing named stayed in the object store for ``NAQ_STATUS_TTL``. Four jobs starting together
over one ``nq.put`` value downloaded it four times at once. The run belongs to the caller
that started it (cancelling that caller cancels it); a waiter whose run ended without success
(cancelled, failed) makes its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``await flights.run(key, make)``: ``make()`` awaited once per key among concurrent callers,
    each of which gets its value. Per event loop: keep one per connection (a broker lives on one loop)."""

    def __init__(self) -> None:
        self._runs: dict[Hashable, asyncio.Task[Any]] = {}

    async def run(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        while (other := self._runs.get(key)) is not None:
            await asyncio.wait({other})  # (a cancel of this waiter leaves the other's run alone)
            if not other.cancelled() and other.exception() is None:
                return other.result()
        task = asyncio.ensure_future(make())
        self._runs[key] = task
        try:
            return await task
        finally:
            if self._runs.get(key) is task:
                del self._runs[key]
