"""One background event-loop thread per process that owns every client connection.

Sync calls submit coroutines to it and block on the answer; async calls submit
and await. Either way the NATS connection lives on one loop, so calls work the
same from a script, from inside a running loop (a Jupyter kernel) and from any
thread. The thread is a daemon, restarted after ``fork``, and stopped at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

log = logging.getLogger("naq_nb.client")

__all__ = ["LoopThread", "get_loop_thread", "run_sync", "run_async", "in_loop_thread"]

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="naq-loop", daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a naq_nb sync call was made on naq_nb's own loop thread (from a callback?); "
                               "use the async form there")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_lock = threading.Lock()
_thread: LoopThread | None = None
_at_exit: list[Callable[[], Awaitable[Any]]] = []


def get_loop_thread() -> LoopThread:
    global _thread
    with _lock:
        if _thread is None or _thread.pid != os.getpid() or not _thread.thread.is_alive():
            _thread = LoopThread()
        return _thread


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread.thread


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and block until it finishes."""
    fut = get_loop_thread().submit(coro)
    try:
        return fut.result(timeout)
    except concurrent.futures.TimeoutError:
        if fut.done():
            raise  # the coroutine's own TimeoutError (e.g. JobNotFinishedError)
        fut.cancel()
        raise TimeoutError(f"naq_nb call did not finish within {timeout}s") from None
    except KeyboardInterrupt:
        fut.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and await it from the caller's loop."""
    if in_loop_thread():
        return await coro
    return await asyncio.wrap_future(get_loop_thread().submit(coro))


def on_exit(coro_fn: Callable[[], Awaitable[Any]]) -> None:
    """Register a coroutine function to run on the loop at interpreter exit (before it stops)."""
    _at_exit.append(coro_fn)


@atexit.register
def _shutdown() -> None:
    t = _thread
    if t is None or t.pid != os.getpid() or not t.thread.is_alive():
        return
    for fn in reversed(_at_exit):
        try:
            asyncio.run_coroutine_threadsafe(fn(), t.loop).result(5)
        except Exception as exc:  # at exit: a hook that fails (or times out) must not stop the others
            log.debug("exit hook %r failed: %s", fn, exc)
    t.stop()
