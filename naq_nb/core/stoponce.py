"""A service's stop (the worker's): asked from anywhere, carried out once, never lost to a start.

Three ways a stop went wrong when each caller did its own: ``stop()`` during ``start()`` returned
at once, so a worker started with ``start()`` alone served on for ever afterwards (nothing waited
on the request) and under ``run()`` the call returned before the worker had stopped; two ``stop()``
calls at once both ran the whole shutdown. Here the request, the start in progress and the
shutdown are one object's: a ``stop()`` first waits for a ``start()`` under way (:meth:`start_over`),
a ``start()`` that ends with a stop asked carries it out itself, and the shutdown runs once, every
caller awaiting that one run (:meth:`once`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, Callable

__all__ = ["StopOnce"]


class StopOnce:
    """The stop of one service: asked (:meth:`ask`), a start's end (:meth:`starting`), one shutdown."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # the service's, from its start
        self.asked: asyncio.Event | None = None  # a stop was asked (run() serves until then)
        self.graceful = True  # False once any request said "at once"
        self._start_over: asyncio.Event | None = None  # set once start() has ended, however
        self._shutdown: asyncio.Future[None] | None = None  # the one shutdown, once begun

    @contextlib.asynccontextmanager
    async def starting(self) -> AsyncIterator[None]:
        """Around a start, on the service's loop: from here a stop can be asked, and waits for its end."""
        self.loop = asyncio.get_running_loop()
        self.asked, self._start_over = asyncio.Event(), asyncio.Event()
        try:
            yield
        finally:
            self._start_over.set()

    def ask(self, graceful: bool, at_once: Callable[[], None]) -> None:
        """Ask for the stop; safe from signal handlers and other threads. ``at_once()`` runs on the
        service's loop when ``graceful`` is False. Before any start there is nothing to stop."""
        loop, asked = self.loop, self.asked
        if loop is None or asked is None:
            return

        def _set() -> None:
            self.graceful = self.graceful and graceful
            if not graceful:
                at_once()
            asked.set()

        try:
            loop.call_soon_threadsafe(_set)
        except RuntimeError:  # the loop is closed: the service ended with it
            pass

    def asked_yet(self) -> bool:
        return self.asked is not None and self.asked.is_set()

    async def start_over(self) -> None:
        """Return once a start under way has ended (at once if none is)."""
        if self._start_over is not None:
            await self._start_over.wait()

    async def once(self, shutdown: Callable[[bool], Awaitable[None]], graceful: bool) -> None:
        """Run ``shutdown(graceful)`` the first time; every call, at once or later, awaits that run.
        Shielded: one caller's cancel must not cut short the shutdown the others wait for."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(shutdown(graceful))
        await asyncio.shield(self._shutdown)
