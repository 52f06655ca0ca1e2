"""Calling a job's function: the worker's two execution modes.

* ``"processes"`` (default, :class:`ProcessExecution`): sync functions run in
  a supervised pool of child processes (:mod:`naq_nb.core.procpool`), one per
  slot. A timeout or cancel kills the child and frees the slot at once; a
  child that dies (segfault, ``os._exit``, OOM kill) fails its job and is
  replaced, the worker goes on.
* ``"threads"`` (:class:`ThreadExecution`): sync functions run in a thread
  pool in the worker's process. Cheaper, shares memory with the worker, but
  there is **no hard timeout or cancel**: CPython cannot interrupt a thread,
  so a sync job past its timeout is failed while its thread runs on (the
  value it returns is dropped) and keeps its slot: that slot takes no job until
  the thread returns (:meth:`JobThreads.wait_left`). A crash in job code ends
  the worker.

In both modes async functions run on the worker's event loop and are
cancelled at their timeout; one that catches that and goes on is left behind
:data:`CANCEL_GRACE` later (its job failed, its slot free). An async function that blocks the loop can't be
interrupted either; if it returns after its timeout it still ends failed with
:class:`JobTimeoutError` (its result is not kept). ``BaseException`` from job
code (``SystemExit``, ``KeyboardInterrupt``) fails the job and never ends the
worker: it travels as a :class:`JobFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ParamSpec, Sequence, TypeVar

from . import blobs
from .broker import Broker
from .context import JobContext, bind, unbind
from .envelope import JobMeta, check_call, decode_call
from .errors import JobExecutionError, JobTimeoutError, SerializationError
from .plaincall import is_plain_call
from .procchild import is_async_callable, leave_if_forked
from .procpool import ProcessPool, WorkerProcessDied
from .records import exception_type_names, user_traceback
from .tracebacks import error_line
from .serialization import Serializer
from .settings import Settings, connection_env

__all__ = [
    "EXECUTION_MODES",
    "JobCall",
    "SerializedValue",
    "JobFailure",
    "ThreadExecution",
    "ProcessExecution",
    "make_execution",
    "failure_parts",
    "call_job",
    "JobThreads",
    "validate_execution",
]

EXECUTION_MODES = ("processes", "threads")
log = logging.getLogger("naq_nb.worker")

_ASYNC_NAMES_MAX = 4096
CANCEL_GRACE = 1.0  # how long a cancelled async job may take to end before its slot leaves it behind
# Seconds (at least the job's timeout) a job process may take to load a job with a timeout before
# calling it: import the function's module, unpickle the arguments. Not counted in the timeout.
LOAD_WAIT = 60.0


def validate_execution(execution: Any, arg: str = "execution") -> str:
    """``execution`` as a known mode name, or ValueError naming ``arg``."""
    if not isinstance(execution, str) or execution not in EXECUTION_MODES:
        raise ValueError(f"{arg} must be one of {', '.join(map(repr, EXECUTION_MODES))}, not {execution!r}")
    return execution


class JobFailure(Exception):
    """A job's failure whose exception can't travel as itself: a ``BaseException``
    from job code, or an outcome reported by a child process."""

    def __init__(self, error: str, traceback: str, types: list[str], original: BaseException | None = None) -> None:
        super().__init__(error)
        self.error, self.traceback, self.types, self.original = error, traceback, types, original

    @classmethod
    def of(cls, exc: BaseException, traceback: str | None = None) -> "JobFailure":
        return cls(
            error_line(exc),
            traceback if traceback is not None else user_traceback(exc),
            exception_type_names(exc),
            exc,
        )


def failure_parts(exc: BaseException) -> tuple[BaseException, str, str, list[str]]:
    """``(exception to record, error line, traceback text, type names)`` of a job's failure."""
    if isinstance(exc, JobFailure):
        rec = exc.original
        if rec is None or not isinstance(rec, Exception):
            # Records and clients rebuild Exceptions; a SystemExit must not be re-raised in a client.
            rec = JobExecutionError(
                exc.error, exc_type=exc.types[0] if exc.types else "", remote_traceback=exc.traceback
            )
        return rec, exc.error, exc.traceback, exc.types
    return exc, error_line(exc), user_traceback(exc), exception_type_names(exc)


@dataclass
class SerializedValue:
    """A job's return value as a job process serialized it (with the job serializer): stored as is."""

    payload: bytes


@dataclass
class JobCall:
    """A delivered job body and what is needed to check and decode it."""

    meta: JobMeta
    headers: dict | None
    body: bytes
    serializer: Serializer
    signing_key: bytes | Sequence[bytes] = b""
    decoded: tuple | None = None
    # The pickled bytes of the body's nq.put values, by SHA-256 (fetch_objects): a job process
    # gets them with the body and unpickles them itself; decode() here does the same.
    objects: dict[str, bytes | bytearray] | None = None

    def decode(self) -> tuple[Callable[..., Any], tuple, dict]:
        if self.decoded is None:
            if self.objects is None:
                self.decoded = self._decode()
            else:
                self.decoded = blobs.decode_with_fetched(self._decode, self.objects, f"job {self.meta.job_id}")
        return self.decoded

    def _decode(self) -> tuple[Callable[..., Any], tuple, dict]:
        return decode_call(self.meta, self.headers, self.body, self.serializer, self.signing_key)

    async def fetch_objects(self, broker: Broker, here: bool) -> None:
        """Fetch the bytes of the body's ``nq.put`` values (after its signature check; values that
        jobs want at once are downloaded once, and cached). They are unpickled where the call is
        decoded: in its job process, so the worker holds one copy of the bytes and no copy of the
        value per job; here with ``here`` (thread execution, where the job runs in this process)."""
        self.objects = await blobs.fetch_objects(broker, self._decode, f"job {self.meta.job_id}")
        self.decoded = None  # (ThreadExecution.prepare decoded it with placeholders)
        if here:
            self.decode()


P = ParamSpec("P")
T = TypeVar("T")


class JobThreads(ThreadPoolExecutor):
    """The thread pool for sync jobs, counting calls still running
    (a sync job past its timeout or a forced stop keeps its thread until it returns)."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="naq-job")
        self._active = 0
        self._lock = threading.Lock()
        self._left: dict[str, Future[Any]] = {}  # job id -> its call, still running after the job ended
        self._left_tasks: set[asyncio.Task[Any]] = set()  # async jobs that went on after their cancel

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        def counted() -> T:
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

    def leave(self, job_id: str, fut: Future[Any]) -> None:
        """``fut``'s job ended (its timeout, a cancel, a stop) while its thread runs on. The thread
        keeps its slot until it returns (:meth:`wait_left`): the pool has a thread per slot, so a
        job taken meanwhile would wait for a thread, recorded running, its timeout counting."""
        with self._lock:
            self._left[job_id] = fut
        fut.add_done_callback(functools.partial(self._returned, job_id))

    def _returned(self, job_id: str, fut: Future[Any]) -> None:
        with self._lock:
            if self._left.get(job_id) is fut:
                del self._left[job_id]

    def own_threads(self) -> frozenset[threading.Thread]:
        """The pool's own threads (idle ones end at interpreter exit; threads a job started are not these)."""
        return frozenset(self._threads)  # (ThreadPoolExecutor's: this class is one)

    @property
    def left(self) -> int:
        """Threads still running calls whose jobs ended: slots not free for a job."""
        return len(self._left)

    def leave_task(self, task: asyncio.Task[Any]) -> None:
        """An async job's ``task`` went on after its cancel and was left behind (see ``_stop_task``);
        kept until it ends, so a stopping worker knows it cannot wait for it (:attr:`tasks_left`)."""
        self._left_tasks.add(task)
        task.add_done_callback(self._left_tasks.discard)

    @property
    def tasks_left(self) -> int:
        """Async jobs left behind on the loop and still running: they hold no slot, but a loop
        shut down with ``asyncio.run`` would wait for them for ever (they catch its cancel too)."""
        return len(self._left_tasks)

    async def wait_left(self, job_id: str) -> None:
        """Return once the call ``job_id`` left running (if any) has returned."""
        with self._lock:
            fut = self._left.get(job_id)
        if fut is None:
            return
        loop = asyncio.get_running_loop()
        back: asyncio.Future[None] = loop.create_future()

        def wake(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, back)

        fut.add_done_callback(wake)  # (after _returned: a slot woken finds the thread no longer counted)
        await back


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # (the waiting slot may have been cancelled: a stop)
        fut.set_result(None)


class ThreadExecution:
    """Sync jobs in threads of the worker's process (no hard timeout or cancel)."""

    mode = "threads"

    def __init__(self, size: int) -> None:
        self.threads = JobThreads(size)

    def start(self) -> None:
        """Nothing to start: threads are made on demand."""

    async def wait_ready(self, timeout: float) -> bool:
        """Always ready."""
        return True

    def prepare(self, call: JobCall) -> None:
        """Decode the call (raises SerializationError)."""
        call.decode()

    isolated = False  # job code runs in the worker's process

    async def run(
        self,
        call: JobCall,
        ctx: JobContext,
        timeout: float | None,
        on_loop: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Run the call; ``on_loop`` is for :class:`ProcessExecution` (every job here runs in the worker)."""
        fn, args, kwargs = call.decode()
        return await call_job(fn, args, kwargs, ctx=ctx, executor=self.threads, timeout=timeout)

    @property
    def active(self) -> int:
        """Sync calls still running in threads (past a timeout or a stop they can't be interrupted)."""
        return self.threads.active

    async def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)


class ProcessExecution:
    """Sync jobs in a pool of child processes; async ones on the loop."""

    mode = "processes"

    def __init__(self, size: int, serializer: Serializer, env: dict[str, str] | None = None) -> None:
        self.pool = ProcessPool(size, serializer, env)
        self.threads = JobThreads(1)  # for a sync function that returns an awaitable: never used to call jobs
        self.active = 0
        self.async_names: set[str] = set()  # functions a job process found async (see _known_async)

    def start(self) -> None:
        """Start the child processes (in the background)."""
        self.pool.start()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every child process has started."""
        return await self.pool.wait_ready(timeout)

    def prepare(self, call: JobCall) -> None:
        """Check serializer and signature; the child unpickles the body."""
        check_call(call.meta, call.headers, call.body, call.serializer, call.signing_key)

    isolated = True  # sync job code can't take the worker down

    async def run(
        self,
        call: JobCall,
        ctx: JobContext,
        timeout: float | None,
        on_loop: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Run the call in a child (sync) or on the loop (async: ``on_loop()`` is awaited first)."""

        def on_progress(done: Any, total: Any, message: Any, lines: list[str]) -> None:
            ctx.update(done=done, total=total, message=message)
            for line in lines:
                ctx.update(line=line)

        if self._known_async(call):
            return await self._on_loop(call, ctx, timeout, on_loop)
        try:
            reply = await self._in_child(call, ctx, timeout, on_progress)
        except WorkerProcessDied as exc:
            crash = getattr(exc, "crash_text", "")
            raise JobFailure.of(exc, f"{crash}\n{type(exc).__name__}: {exc}\n" if crash else None) from None
        kind = reply[0]
        if kind == "ok":
            return SerializedValue(reply[1])
        if kind == "async":  # async functions stay on the worker's loop
            if len(self.async_names) >= _ASYNC_NAMES_MAX:
                self.async_names.clear()  # bounded: names can be anything a producer sends
            self.async_names.add(call.meta.function)
            return await self._on_loop(call, ctx, timeout, on_loop)
        _, where, exc_bytes, error, tb, types = reply
        original = call.serializer.loads_exception(exc_bytes) if exc_bytes else None
        if where == "decode":
            raise SerializationError(error.partition(": ")[2] or error)
        raise JobFailure(error, tb, types, original)

    async def _in_child(self, call: JobCall, ctx: JobContext, timeout: float | None, on_progress: Any) -> tuple:
        """The reply of a child that ran ``call``. A ``timeout`` counts from the child's "started" (the
        body decoded: the function's module imported, the arguments unpickled), as in threads mode;
        the loading before it is bounded on its own, by :data:`LOAD_WAIT` or the timeout if longer."""
        child = await self.pool.acquire()  # a child still starting is the worker's delay, not the job's time
        job = (child, ctx.job_id, ctx.queue, ctx.attempt, call.body, on_progress)
        if timeout is None:
            return await self.pool.call(*job, objects=call.objects)
        load_bound = max(timeout, LOAD_WAIT)
        started = False
        try:
            # Inline, not wait_for's task: once acquired, the child always reaches call's cleanup.
            async with asyncio.timeout(load_bound) as deadline:

                def on_started() -> None:
                    nonlocal started
                    started = True
                    deadline.reschedule(asyncio.get_running_loop().time() + timeout)

                return await self.pool.call(*job, objects=call.objects, on_started=on_started)
        except TimeoutError:
            raise JobTimeoutError(
                f"job {ctx.job_id} timed out after {timeout:g}s (its process was killed)"
                if started
                else f"job {ctx.job_id} timed out: its job process had not loaded its function and arguments "
                f"within {load_bound:g}s (importing its module, unpickling; its process was killed)"
            ) from None

    def _known_async(self, call: JobCall) -> bool:
        """True for a call of a function a job process already found async: decoded here, it skips
        the round trip through a job process that would only say so again. Only a call whose
        unpickling runs no code (:mod:`.plaincall`: plain arguments, the function by reference) is
        decoded here; an argument that could crash or exit while unpickled still meets it in a job
        process first. A body with ``nq.put`` values was unpickled here already (placeholders, by
        :meth:`JobCall.fetch_objects`), so it is decoded here too, with its values, as the async
        function needs them here. A name is only a label, so the decoded function decides too."""
        if call.meta.function not in self.async_names:
            return False
        before = call.decoded
        if (
            before is None
            and call.objects is None
            and call.serializer.name == "pickle"
            and not is_plain_call(call.body, call.meta.function)
        ):
            return False
        if is_async_callable(call.decode()[0]):
            return True
        self.async_names.discard(call.meta.function)
        call.decoded = before  # the job process decodes the body itself, as for any sync job
        return False

    async def _on_loop(
        self,
        call: JobCall,
        ctx: JobContext,
        timeout: float | None,
        on_loop: Callable[[], Awaitable[None]] | None,
    ) -> Any:
        fn, args, kwargs = call.decode()
        if on_loop is not None:
            await on_loop()
        return await call_job(fn, args, kwargs, ctx=ctx, executor=self.threads, timeout=timeout)

    async def close(self) -> None:
        await self.pool.close()
        self.threads.shutdown(wait=False, cancel_futures=True)


def make_execution(
    execution: str, size: int, serializer: Serializer, settings: Settings | None = None
) -> ThreadExecution | ProcessExecution:
    """The executor for ``execution`` (``"processes"`` or ``"threads"``) with ``size`` slots; job
    processes get the connection of ``settings`` (the worker's) as their default."""
    if validate_execution(execution) == "threads":
        return ThreadExecution(size)
    return ProcessExecution(size, serializer, connection_env(settings) if settings is not None else None)


async def call_job(
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    ctx: JobContext,
    executor: JobThreads,
    timeout: float | None,
) -> Any:
    """Run ``fn(*args, **kwargs)`` with ``ctx`` as the current job; raise JobTimeoutError ``timeout``
    seconds from now.

    An async function that blocked the loop past its timeout is failed when it returns (the
    deadline could not fire meanwhile). One that goes on after its cancel (it catches
    ``CancelledError``) is left behind :data:`CANCEL_GRACE` later (see :func:`_await_task`).
    """
    t0 = time.monotonic()
    left = timeout
    try:
        if is_async_callable(fn):
            result = await _await_task(_job_task(fn, args, kwargs, ctx), ctx.job_id, left, executor)
        else:
            result = await _await_thread(executor, fn, args, kwargs, ctx, left)
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise _Deadline  # it blocked the loop past its deadline
    except _Deadline:
        raise JobTimeoutError(f"job {ctx.job_id} timed out after {timeout:g}s") from None
    if inspect.isawaitable(result):  # a sync function that returned a coroutine
        result = await result
    return result


class _Deadline(Exception):
    """A job's timeout passed (distinct from a ``TimeoutError`` the job's own code raises)."""


def _job_task(fn: Callable[..., Any], args: tuple, kwargs: dict, ctx: JobContext) -> asyncio.Task[Any]:
    token = bind(ctx)
    try:
        coro = fn(*args, **kwargs)
    finally:
        unbind(token)
    return asyncio.get_running_loop().create_task(_with_ctx(coro, ctx), name=f"naq-job:{ctx.job_id}")


async def _await_task(task: asyncio.Task[Any], job_id: str, left: float | None, executor: JobThreads) -> Any:
    """The job task's result, or :class:`_Deadline` after ``left`` seconds.

    Awaited through ``asyncio.wait``, which never waits on the job's task when this (the slot's)
    task is cancelled: ``wait_for`` does, so a job that catches its ``CancelledError`` held its
    slot until it chose to end. A cancel notice or a stop and the deadline take one path
    (:func:`_stop_task`), and the slot goes on either way.
    """
    try:
        done, _ = await asyncio.wait((task,), timeout=left)
    except asyncio.CancelledError:
        await _stop_task(task, job_id, "cancelled", executor)
        raise
    if not done:
        await _stop_task(task, job_id, "past its timeout", executor)
        raise _Deadline
    return task.result()


async def _stop_task(task: asyncio.Task[Any], job_id: str, why: str, executor: JobThreads) -> None:
    """Cancel the job's task and give it :data:`CANCEL_GRACE` to end; one still going is left to end
    by itself. Its outcome is dropped either way: the job's end is the caller's to record."""
    task.cancel()
    try:
        await asyncio.wait((task,), timeout=CANCEL_GRACE)
    finally:  # (a second cancel, a forced stop, cuts the grace short)
        task.add_done_callback(_drop_outcome)
        if not task.done():
            executor.leave_task(task)
            log.warning(
                "job %s: %s, its async function did not end when cancelled (it catches CancelledError); "
                "left running on the worker's loop, its outcome will be dropped",
                job_id,
                why,
            )


def _drop_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an ended job's late error is nobody's to log


async def _await_thread(
    executor: JobThreads, fn: Callable[..., Any], args: tuple, kwargs: dict, ctx: JobContext, left: float | None
) -> Any:
    """A sync call's result from a thread, or :class:`_Deadline` after ``left`` seconds (the thread
    can't be stopped: it runs on, its value dropped)."""
    run = contextvars.copy_context()
    run.run(bind, ctx)
    fut = executor.submit(run.run, _call_sync, fn, args, kwargs, os.getpid())
    aw = asyncio.wrap_future(fut)
    try:
        done, _ = await asyncio.wait((aw,), timeout=left)
    finally:
        if not fut.done():
            executor.leave(ctx.job_id, fut)
            aw.cancel()  # the wrapper only: its value, when it comes, goes nowhere
    if not done:
        raise _Deadline
    return aw.result()


async def _with_ctx(coro: Any, ctx: JobContext) -> Any:
    token = bind(ctx)
    try:
        return await coro
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:  # SystemExit / KeyboardInterrupt would stop the worker's loop
        raise JobFailure.of(exc) from None
    finally:
        unbind(token)


def _call_sync(fn: Callable[..., Any], args: tuple, kwargs: dict, pid: int) -> Any:
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        leave_if_forked(pid, exc)
        if isinstance(exc, Exception):
            raise
        raise JobFailure.of(exc) from None  # SystemExit / KeyboardInterrupt from a job thread: a failure, not a stop
    leave_if_forked(pid, None)
    return value
