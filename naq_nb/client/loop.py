"""One background event-loop thread per process that owns every client connection.

Sync calls submit coroutines to it and block on the answer; async calls submit
and await. Either way the NATS connection lives on one loop, so calls work the
same from a script, from inside a running loop (a Jupyter kernel) and from any
thread. The thread is a daemon, restarted after ``fork``, and stopped at exit.

Crossing threads costs two thread wake-ups per call (most of a short call on a
busy machine), so a coroutine marked :func:`any_loop` (it only uses the
connection of the loop it runs on, see ``Client.broker_here``) runs directly on
an async caller's own loop once that loop has made a naq_nb call before: a
loop that makes one call (``asyncio.run(one_call())``) is not worth a
connection. What such a loop owns is released by :func:`on_loop_close` hooks
when ``asyncio.run`` shuts it down (its async-generator shutdown runs them), or when the
loop is closed by hand (``loop.close()`` runs them first).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import multiprocessing
import os
import sys
import threading
import types
import weakref
from typing import Any, AsyncGenerator, Awaitable, Callable, Coroutine, TypeVar

__all__ = [
    "LoopThread",
    "get_loop_thread",
    "run_sync",
    "run_async",
    "in_loop_thread",
    "check_not_loop_thread",
    "any_loop",
    "on_loop_close",
    "call_soon",
    "settle_interrupted",
]

log = logging.getLogger("naq_nb.client")

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="naq-loop", daemon=True)
        self.thread.start()
        self._started.wait()
        #: Made while the interpreter exits (in an atexit hook, or after the exit flush ran): the
        #: hook registered below never runs then, so nothing may count on it (:func:`exit_flush_covers`).
        self.late = _exited or _main_script_done()
        # atexit runs its hooks last-registered first: registered again now, the exit flush of
        # enqueues in flight runs before hooks registered earlier, e.g. stopping the script's own
        # EmbeddedServer (core.server registers that when imported).
        atexit.unregister(_shutdown)
        atexit.register(_shutdown)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        try:
            check_not_loop_thread()
        except RuntimeError:
            coro.close()  # never awaited: closed, so Python does not warn about it
            raise
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


def check_not_loop_thread() -> None:
    """Raise if the caller is naq_nb's loop thread: a sync call or a blocking wait there waits for the
    very thread that would answer it, and so hangs every naq_nb call in the process for ever."""
    if in_loop_thread():
        raise RuntimeError(
            "a naq_nb sync call was made on naq_nb's own loop thread (from a callback?); use the async form there"
        )


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


def call_soon(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` on the background loop without waiting (in order with other such calls)."""
    if in_loop_thread():
        fn(*args)
    else:
        get_loop_thread().loop.call_soon_threadsafe(fn, *args)


# Code objects of coroutine functions that may run on any caller's loop (see the module doc).
_ANY_LOOP: set[types.CodeType] = set()


def any_loop(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an ``async def`` as safe on any loop: :func:`run_async` then runs it on the caller's own."""
    _ANY_LOOP.add(fn.__code__)
    return fn


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and await it from the caller's loop (or, for an
    :func:`any_loop` coroutine on a loop that made naq_nb calls before, right here)."""
    if in_loop_thread():
        return await coro
    if getattr(coro, "cr_code", None) in _ANY_LOOP and _seen_before(asyncio.get_running_loop()):
        return await coro
    return await asyncio.wrap_future(get_loop_thread().submit(coro))


class _LoopState:
    """What naq_nb keeps for one caller loop: close hooks, and the async generator that runs them."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.guard: AsyncGenerator[None, None] | None = None

    async def run_closers(self) -> None:
        hooks, self.closers = self.closers, []
        for fn in hooks:
            try:
                await fn()
            except Exception as exc:  # the loop is ending; one failing hook must not keep the others
                log.debug("loop close hook %r failed: %s", fn, exc)


# Caller loops seen; an entry is dropped when its loop shuts down (or is found closed).
_loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = weakref.WeakKeyDictionary()
_loops_lock = threading.Lock()


def _seen_before(loop: asyncio.AbstractEventLoop) -> bool:
    """True from a loop's second naq_nb call on (the first one is counted here)."""
    with _loops_lock:
        if loop in _loops:
            return True
        _loops[loop] = _LoopState()
        return False


async def _guard(loop: asyncio.AbstractEventLoop, state: _LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:  # asyncio.run's shutdown_asyncgens (or a collected generator): the loop is ending
        with _loops_lock:
            if _loops.get(loop) is state:
                del _loops[loop]
        await state.run_closers()


async def on_loop_close(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``await fn()`` on the running (caller) loop when it shuts down, e.g. to close a connection
    made for it; also when ``loop.close()`` is called without it. Hooks of a loop closed otherwise
    (uvloop's, closed by hand) are dropped unrun; :func:`sweep_closed_loops` forgets those loops."""
    loop = asyncio.get_running_loop()
    with _loops_lock:
        state = _loops.setdefault(loop, _LoopState())
    state.closers.append(fn)
    if state.guard is None:
        # A started async generator is registered with the loop, whose shutdown_asyncgens closes it.
        state.guard = _guard(loop, state)
        await state.guard.asend(None)
        _close_first(loop, state.guard)


def _close_first(loop: asyncio.AbstractEventLoop, guard: AsyncGenerator[None, None]) -> None:
    """Make ``loop.close()`` run the loop's hooks first (as ``asyncio.run`` does through its
    asyncgen shutdown). A loop a caller closes by hand (``run_until_complete``, then ``close``) left
    its connection's tasks pending on a closed loop: "Task was destroyed but it is pending!" at gc or
    exit. A loop whose ``close`` cannot be replaced (uvloop's) is swept as before."""
    close = loop.close

    def close_after_hooks() -> None:
        if not loop.is_running() and not loop.is_closed():
            try:
                loop.run_until_complete(guard.aclose())  # (done already after an asyncgen shutdown)
            except Exception as exc:  # closing anyway: a failing hook must not keep the loop open
                log.debug("closing naq_nb's resources of a loop being closed: %s", exc)
        close()

    try:
        loop.close = close_after_hooks  # type: ignore[method-assign]
    except AttributeError:
        pass


def sweep_closed_loops() -> list[asyncio.AbstractEventLoop]:
    """Forget loops already closed (their hooks can no longer run); returns them."""
    with _loops_lock:
        dead = [(lp, _loops.pop(lp)) for lp in list(_loops) if lp.is_closed()]
    for _lp, state in dead:
        state.closers = []
        if state.guard is not None:
            # Finish the generator here (its hooks list is empty, so it never suspends): left to the
            # garbage collector, its finalizer would call into the closed loop and fail noisily.
            try:
                state.guard.aclose().send(None)
            except (StopIteration, RuntimeError):
                pass  # finished (the usual case); RuntimeError: it had already been closed
    return [lp for lp, _ in dead]


def on_exit(coro_fn: Callable[[], Awaitable[Any]]) -> None:
    """Register a coroutine function to run on the loop at interpreter exit (before it stops)."""
    _at_exit.append(coro_fn)


def exit_flush_covers() -> bool:
    """Whether the exit flush will settle this process's enqueues (or say they were lost), so one
    may return before its acknowledgement. Not in a forked or multiprocessing child (a forked one
    ends with ``os._exit``, which skips it), nor on a loop made while the interpreter exits."""
    t = _thread
    return t is not None and not t.late and os.getpid() == _MAIN_PID and multiprocessing.parent_process() is None


_MAIN_PID = os.getpid()


def _main_script_done() -> bool:
    """The main thread no longer runs the ``__main__`` module's code: atexit hooks (or the wait for
    threads before them) are running. An embedded interpreter with no such frame reads as done,
    the safe answer (each enqueue then waits for its acknowledgement)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            return False
        frame = frame.f_back
    return True


def settle_interrupted() -> None:
    """Wait for the clean-ups of interrupted calls still running on naq_nb's loop, before its
    connections close (at exit, at ``nq.local()``'s stop). A blocking call returns at the Ctrl-C
    and what it had sent is cancelled on the loop afterwards: in a script the interpreter exits at
    once, and closing the connection under that withdrawal left the jobs running. Bounded by the
    withdrawal's own bound, so it is never cut short here; what is left past it is said loudly."""
    t = _thread
    if t is None or t.pid != os.getpid() or not t.thread.is_alive() or in_loop_thread():
        return
    from ..core.aftercancel import settle
    from ..core.notices import say_loudly
    from ..core.withdraw import WITHDRAW_SECONDS

    bound = WITHDRAW_SECONDS + 5  # (run_to_end's bound of a withdrawal: 30 s for the cancels, 5 to say so)
    fut = asyncio.run_coroutine_threadsafe(settle(bound), t.loop)
    try:
        try:
            left = fut.result(1.0)  # (most end within a second: 1,000 jobs cancelled take about that)
        except concurrent.futures.TimeoutError:
            say_loudly(
                log,
                f"waiting up to {bound:g}s for naq_nb to undo what an interrupted call did (cancel the jobs "
                "it sent, delete what it uploaded); Ctrl-C again to leave it undone",
                logging.WARNING,
            )
            left = fut.result(bound + 5)
        why = f"not done within {bound:g}s: {'; '.join(left)}"
    except (KeyboardInterrupt, concurrent.futures.TimeoutError) as exc:
        fut.cancel()  # (the wait, not the clean-ups)
        left = ["?"]
        why = "interrupted again" if isinstance(exc, KeyboardInterrupt) else "naq_nb's loop did not answer"
    if left:
        say_loudly(
            log,
            f"naq_nb's connections close with the undoing of an interrupted call unfinished ({why}): jobs it "
            "had not cancelled may run, objects it had not deleted stay until their bucket's age limit",
        )


_exited = False  # the exit flush ran: a loop made after it is never flushed


@atexit.register
def _shutdown() -> None:
    global _exited
    _exited = True
    t = _thread
    if t is None or t.pid != os.getpid() or not t.thread.is_alive():
        return
    settle_interrupted()  # first: the hooks below close the connections the clean-ups go through
    for fn in reversed(_at_exit):
        try:
            asyncio.run_coroutine_threadsafe(fn(), t.loop).result(5)
        except Exception as exc:  # at exit: a hook that fails (or times out) must not stop the others
            log.debug("exit hook %r failed: %s", fn, exc)
    t.stop()
