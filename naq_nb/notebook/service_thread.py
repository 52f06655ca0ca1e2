"""A service (a worker, a scheduler) on its own event loop in a daemon thread of this process:
what ``nq.local()`` runs in the kernel (its scheduler; its worker with ``processes=False``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ..core.errors import NaqException

__all__ = ["ServiceThread"]

log = logging.getLogger("naq_nb.local")


class ServiceThread:
    """Runs a service (``run()``, ``request_stop(graceful)``, ``started``) on its own loop in a daemon thread."""

    def __init__(self, service: Any, name: str) -> None:
        self.service = service
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServiceThread":
        """Start and return once the service serves; raise its start-up error if it failed."""
        self.thread.start()
        if not self._ready.wait(timeout):
            self.stop(5.0)
            raise NaqException(f"{self.thread.name} did not start within {timeout:g}s")
        if self.error is not None:
            self.thread.join(5.0)
            raise self.error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() or logged; never printed
            if self.error is None:
                self.error = exc
            if self._ready.is_set():
                log.error("%s ended with %s: %s", self.thread.name, type(exc).__name__, exc)
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _main(self) -> None:
        task = asyncio.ensure_future(self.service.run())
        await asyncio.sleep(0)  # run() has created its `started` event by its first await
        started = getattr(self.service, "started", None)
        if started is not None:
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
        self._ready.set()
        await task

    @property
    def alive(self) -> bool:
        """True while the service's thread runs."""
        return self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Graceful stop within ``timeout``, then an immediate one; True if the thread ended."""
        if not self.thread.is_alive():
            return True
        self.service.request_stop(graceful=True)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.service.request_stop(graceful=False)
            self.thread.join(timeout)
        return not self.thread.is_alive()
