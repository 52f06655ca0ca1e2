"""Many futures at once: ``nq.map``'s :class:`JobGroup` and ``gather`` / ``as_completed`` / ``wait``.

A :class:`JobGroup` is a list of :class:`JobFuture` (index, iterate, ``len``)
with aggregate calls: ``results()``, ``wait()``, ``counts()``, ``cancel()``,
``as_completed()``, ``await group``. Shown in a notebook it is ONE live
display (counts per status, throughput, ETA; the notebook layer draws it
through the client's display hook) whose saved output is the final state.

The free functions take any iterable of JobFutures (a group too), in the
spirit of dask's client: :func:`gather` returns results in order,
:func:`as_completed` yields futures as they end, :func:`wait` returns
``(done, not_done)`` like ``concurrent.futures.wait``. Each has an async form.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import reprlib
import threading
import time
from typing import Any, AsyncIterator, Callable, Generator, Iterable, Iterator, cast

from ..core.job import new_job_id
from ..core.results import check_timeout
from . import future as future_mod
from .future import JobFuture, refuse_wait_on_loop_thread
from .twins import blocking
from .watch import _refollow_awaited

__all__ = [
    "JobGroup",
    "gather",
    "gather_async",
    "as_completed",
    "as_completed_async",
    "wait",
    "wait_async",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
]

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED
_ERRORS = ("raise", "return", "skip")
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist = 30, 30, 4


def _futures(futures: Any, what: str) -> list[JobFuture]:
    if isinstance(futures, JobFuture):
        return [futures]
    if isinstance(futures, (str, bytes)) or not hasattr(futures, "__iter__"):
        raise TypeError(
            f"{what}() needs JobFutures (a list, nq.map's group, or one future), not {type(futures).__name__}"
        )
    out = list(futures)
    bad = next((f for f in out if not isinstance(f, JobFuture)), None)
    if bad is not None:
        raise TypeError(f"{what}() needs JobFutures, got a {type(bad).__name__}: {bad!r}")
    return out


def _check_timeout(timeout: Any, what: str) -> float | None:
    return check_timeout(timeout, f"{what}(timeout=...)")


def _outcome(f: JobFuture, errors: str) -> Any:
    exc = concurrent.futures.CancelledError(f"job {f.job_id} was cancelled") if f.cancelled() else f.exception(0)
    if exc is None:
        return f.result(0)
    if errors == "raise":
        raise exc
    return exc


def _collect(futs: list[JobFuture], errors: str) -> list[Any]:
    out = []
    for f in futs:
        value = _outcome(f, errors)
        if errors == "skip" and isinstance(value, BaseException):
            continue
        out.append(value)
    return out


def _check_errors(errors: Any) -> str:
    if errors not in _ERRORS:
        raise ValueError(f"errors must be one of {', '.join(map(repr, _ERRORS))}, not {errors!r}")
    return errors


def _timeout_error(futs: list[JobFuture], timeout: float | None) -> TimeoutError:
    """How many did not finish, by status; a job this server has no record of is named as such: it
    will never finish, and "they keep running" would send its caller to wait again."""
    pending = [f for f in futs if not f.done()]
    by_status: dict[str, int] = {}
    for f in pending:
        by_status[f.status] = by_status.get(f.status, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    msg = f"{len(pending)} of {len(futs)} jobs did not finish within {timeout:g}s ({counts})"
    unknown = [f.job_id for f in pending if f.status == "unknown"]
    if unknown:
        msg += (
            f"; this server has no record of {_repr.repr(unknown)} (a wrong id, records expired, or a store "
            "that was deleted or started empty; nq.job(id) says which)"
        )
    if len(unknown) < len(pending):
        msg += "; the others keep running: wait again, or look at nq.workers() if nothing serves their queue"
    return TimeoutError(msg)


# --- the free functions ------------------------------------------------------------------------
def wait(
    futures: Iterable[JobFuture], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[JobFuture], set[JobFuture]]:
    """``(done, not_done)`` once ``return_when`` holds or ``timeout`` passed (like ``concurrent.futures.wait``)."""
    futs = _futures(futures, "wait")
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, not {return_when!r}")
    t = _check_timeout(timeout, "wait")
    refuse_wait_on_loop_thread(futs, t)
    done, pending = concurrent.futures.wait(futs, t, return_when)
    return set(done), set(pending)  # type: ignore[arg-type]


def gather(futures: Iterable[JobFuture], timeout: float | None = None, errors: str = "raise") -> list[Any]:
    """Every result in the order given, after waiting (``TimeoutError`` names how many are left).

    ``errors="raise"`` raises the first failed job's exception (in order);
    ``"return"`` puts exceptions in place of results; ``"skip"`` leaves them out.
    """
    futs = _futures(futures, "gather")
    errors = _check_errors(errors)
    t = _check_timeout(timeout, "gather")
    refuse_wait_on_loop_thread(futs, t)
    _, pending = concurrent.futures.wait(futs, t)
    if pending:
        raise _timeout_error(futs, t)
    return _collect(futs, errors)


def as_completed(futures: Iterable[JobFuture], timeout: float | None = None) -> Iterator[JobFuture]:
    """Yield the futures as they end (first finished first); ``TimeoutError`` after ``timeout`` seconds."""
    futs = _futures(futures, "as_completed")
    t = _check_timeout(timeout, "as_completed")
    refuse_wait_on_loop_thread(futs, t)
    try:
        yield from concurrent.futures.as_completed(futs, t)  # type: ignore[misc]
    except concurrent.futures.TimeoutError:
        raise _timeout_error(futs, t) from None


async def _until(futs: list[JobFuture], timeout: float | None, enough: Callable[[], bool]) -> None:
    await _refollow_awaited()
    loop = asyncio.get_running_loop()
    woke = asyncio.Event()

    def _done(_f: concurrent.futures.Future) -> None:
        try:
            loop.call_soon_threadsafe(woke.set)
        except RuntimeError:  # the awaiting loop has closed
            pass

    for f in futs:
        f._on_done(_done)
    deadline = None if timeout is None else loop.time() + timeout
    while not enough():
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            break
        woke.clear()
        try:
            await asyncio.wait_for(woke.wait(), left)
        except asyncio.TimeoutError:
            break


async def wait_async(
    futures: Iterable[JobFuture], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[JobFuture], set[JobFuture]]:
    """Async form of :func:`wait` (from any event loop; never cancels the jobs)."""
    futs = _futures(futures, "wait")
    t = _check_timeout(timeout, "wait")

    def enough() -> bool:
        done = [f for f in futs if f.done()]
        if return_when == FIRST_COMPLETED:
            return bool(done)
        if return_when == FIRST_EXCEPTION and any(f.cancelled() or f.exception(0) is not None for f in done):
            return True
        return len(done) == len(futs)

    await _until(futs, t, enough)
    return {f for f in futs if f.done()}, {f for f in futs if not f.done()}


async def gather_async(futures: Iterable[JobFuture], timeout: float | None = None, errors: str = "raise") -> list[Any]:
    """Async form of :func:`gather`."""
    futs = _futures(futures, "gather")
    errors = _check_errors(errors)
    t = _check_timeout(timeout, "gather")
    await _until(futs, t, lambda: all(f.done() for f in futs))
    pending = sum(not f.done() for f in futs)
    if pending:
        raise _timeout_error(futs, t)
    return _collect(futs, errors)


async def as_completed_async(futures: Iterable[JobFuture], timeout: float | None = None) -> AsyncIterator[JobFuture]:
    """Async form of :func:`as_completed`: ``async for f in nq.as_completed_async(futs): ...``."""
    futs = _futures(futures, "as_completed")
    t = _check_timeout(timeout, "as_completed")
    await _refollow_awaited()
    loop = asyncio.get_running_loop()
    deadline = None if t is None else loop.time() + t
    queue: asyncio.Queue[JobFuture] = asyncio.Queue()
    for f in futs:  # (a done callback gets the future it was added to: a JobFuture)
        f._on_done(lambda fut: loop.call_soon_threadsafe(queue.put_nowait, cast(JobFuture, fut)))
    for _ in futs:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            yield await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            raise _timeout_error(futs, t) from None


# --- the group -------------------------------------------------------------------------------------
class JobGroup(list):
    """The jobs of one ``nq.map`` call: a list of futures (it IS a list, as ``nq.map`` returned
    before) with aggregate calls and one live display."""

    kind = "map"
    __hash__ = None  # a list: unhashable

    def __init__(
        self, futures: list[JobFuture], calls: list[tuple[tuple, dict]], function: str, name: str | None = None
    ) -> None:
        super().__init__(futures)
        self._calls = calls
        self.function = function
        self.name = name or function.rsplit(".", 1)[-1]
        self.id = new_job_id()
        self.created = time.time()
        self._listeners: list[Callable[["JobGroup", int], None]] = []
        self._lock = threading.Lock()
        for i, f in enumerate(self):
            f.on_update(lambda _f, i=i: self._changed(i))

    @property
    def futures(self) -> list[JobFuture]:
        """The futures, in call order (the group itself)."""
        return self

    @property
    def job_ids(self) -> list[str]:
        """Job id per call, in call order."""
        return [f.job_id for f in self.futures]

    def label(self, i: int) -> str:
        """The arguments of call ``i``, short: ``3, 'a'``."""
        args, kwargs = self._calls[i]
        parts = [_repr.repr(a) for a in args] + [f"{k}={_repr.repr(v)}" for k, v in kwargs.items()]
        return ", ".join(parts)

    # --- live updates -------------------------------------------------------------------------
    def on_update(self, cb: Callable[["JobGroup", int], None]) -> Callable[[], None]:
        """Call ``cb(group, index)`` on naq_nb's loop thread when job ``index`` changes; returns unsubscribe."""
        with self._lock:
            self._listeners.append(cb)

        def unsubscribe() -> None:
            with self._lock:
                if cb in self._listeners:
                    self._listeners.remove(cb)

        return unsubscribe

    def _changed(self, i: int) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            cb(self, i)

    # --- aggregate calls ------------------------------------------------------------------------
    def done(self) -> bool:
        """True when every job has ended."""
        return all(f.done() for f in self.futures)

    def counts(self) -> dict[str, int]:
        """Number of jobs per status."""
        out: dict[str, int] = {}
        for f in self.futures:
            out[f.status] = out.get(f.status, 0) + 1
        return out

    def wait(self, timeout: float | None = None) -> "JobGroup":
        """Block until every job ended; ``TimeoutError`` after ``timeout`` seconds. Returns the group."""
        t = _check_timeout(timeout, "wait")
        refuse_wait_on_loop_thread(self.futures, t)
        _, pending = concurrent.futures.wait(self.futures, t)
        if pending:
            raise _timeout_error(list(self), t)
        return self

    def results(self, timeout: float | None = None, errors: str = "raise") -> list[Any]:
        """Every result in call order (see :func:`gather` for ``errors``)."""
        return gather(self.futures, timeout, errors)

    async def results_async(self, timeout: float | None = None, errors: str = "raise") -> list[Any]:
        """Async form of :meth:`results`."""
        return await gather_async(self.futures, timeout, errors)

    def as_completed(self, timeout: float | None = None) -> Iterator[JobFuture]:
        """The futures as they end (see :func:`as_completed`)."""
        return as_completed(self.futures, timeout)

    async def cancel_async(self) -> int:
        """Cancel every job that has not ended, together (their queue read once, 64 cancels at a time);
        returns how many got cancelled. Those that could not be (the server gone) are named in a warning."""
        cancelled = 0
        for futures in self._live_by_client():
            if futures[0].job is None:
                cancelled += sum([await f.cancel_async() for f in futures])
                continue
            outcomes = await futures[0].client.cancel_many([f.job for f in futures if f.job is not None])
            cancelled += sum(f._after_cancel(outcomes.get(f.job_id) == "cancelled") for f in futures)
        return cancelled

    cancel = blocking(cancel_async)

    def _live_by_client(self) -> list[list[JobFuture]]:
        """The futures not done, by client, and apart those with no job in hand (made from an id)."""
        groups: dict[tuple[int, bool], list[JobFuture]] = {}
        for f in self.futures:
            if not f.done():
                groups.setdefault((id(f.client), f.job is not None), []).append(f)
        return list(groups.values())

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self.results_async().__await__()

    # --- display --------------------------------------------------------------------------------
    def summary(self) -> str:
        """``8/8 succeeded`` or ``5/8 succeeded, 1 failed, 2 running``."""
        c = self.counts()
        rest = [f"{n} {s}" for s, n in sorted(c.items()) if s != "succeeded"]
        return ", ".join([f"{c.get('succeeded', 0)}/{len(self)} succeeded", *rest])

    def __repr__(self) -> str:
        return f"<JobGroup {self.name} ({len(self)} jobs): {self.summary()}>"

    def _ipython_display_(self) -> None:
        hook = future_mod.display_hook
        if hook is not None:
            hook(self)
            return
        from IPython.display import display

        display({"text/plain": repr(self)}, raw=True)
