"""Job futures: a :class:`concurrent.futures.Future` per job, resolved by push.

A :class:`JobFuture` is a real ``concurrent.futures.Future``, so
``concurrent.futures.wait`` / ``as_completed`` and done callbacks work, and it is
awaitable from any event loop (``await job`` in a Jupyter cell). It is resolved
by its client's :class:`~naq_nb.client.watch.JobWatch` when the job's result
record is put, never by a thread blocking per job; status records (timings,
attempts, progress, logs) arrive the same way and fire :meth:`JobFuture.on_update`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import html
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable

from ..core.errors import SerializationError
from ..core.job import Job, JobStatus
from ..core.layout import validate_job_id
from ..core.records import ResultRecord
from ..core.results import check_timeout
from ..core.status import TERMINAL_VALUES, StatusRecord, first_record, initial_status, with_status
from .shared import default_client
from .loop import check_not_loop_thread, in_loop_thread, run_async, run_sync
from .twins import blocking, blocking_classmethod
from .watch import get_watch, register, _refollow, _refollow_awaited

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "JobFuture",
    "display_hook",
    "submit_jobs",
    "submit_jobs_sync",
    "attach_many",
    "refuse_wait_on_loop_thread",
]

_HINT_TIMEOUT = 1.0  # seconds a timed-out result() may spend finding whether a worker serves the queue

log = logging.getLogger("naq_nb.client")

#: Set by the notebook layer (a live widget); called by ``JobFuture._ipython_display_`` and
#: ``JobGroup._ipython_display_`` with the future or the group (what it returns is ignored).
display_hook: Callable[[Any], object] | None = None


class JobFuture(concurrent.futures.Future):
    """The handle of one job: its result, its live status, and remote cancel.

    Create with :meth:`attach` (an existing job id) or through ``nq.submit``.
    """

    def __init__(self, job_id: str, client: "Client", job: Job | None = None) -> None:
        super().__init__()
        self.job_id = validate_job_id(job_id)
        self.client = client
        self.job = job
        self._record: StatusRecord = {}
        # How the job ended, as its stored result (or a cancel here) says; None until then.
        self._outcome: str | None = None
        self._listeners: list[Callable[["JobFuture"], None]] = []
        #: True while this client is still sending the job (it may wait for a lost connection): a
        #: re-read after a reconnect that finds no record of it must not call it lost (see watch).
        self._sending = False

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future], object]) -> None:
        """As :meth:`concurrent.futures.Future.add_done_callback`, but ``fn`` never runs on naq_nb's
        own loop thread, which resolves job futures: there a naq_nb call in ``fn`` could not run,
        and a wait in it would hold up every other result. A future resolved there calls ``fn``
        from a helper thread (``naq-callbacks``), one callback at a time, in order."""
        super().add_done_callback(functools.partial(_off_the_loop, fn))

    def _on_done(self, fn: Callable[[concurrent.futures.Future], object]) -> None:
        """naq_nb's own done callbacks: short and thread-safe, run wherever the future resolves."""
        super().add_done_callback(fn)

    # --- creation -------------------------------------------------------------
    @classmethod
    async def attach_async(cls, job_id: str, client: "Client | None" = None, job: Job | None = None) -> "JobFuture":
        """A future for an existing job id (no existence check); its state is fetched once."""
        fut = cls(job_id, client or default_client(), job)
        await register(fut.client, [fut], fetch=True)
        return fut

    attach = blocking_classmethod(attach_async)

    # --- waiting ----------------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        """The job's result, waiting up to ``timeout`` seconds; raises the job's own exception.

        A timeout raises ``TimeoutError`` saying the job's status and whether a
        worker serves its queue; the job keeps running (wait again).
        """
        timeout = check_timeout(timeout, "result(timeout=...)")
        refuse_wait_on_loop_thread([self], timeout)
        try:
            return super().result(timeout)
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and not self.done():
                raise TimeoutError(self._timeout_message(timeout)) from None
            # The job's exception, without concurrent.futures' frames: the user's line, then the worker's.
            raise exc.with_traceback(None)  # noqa: B904 - the same exception object, re-raised

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The job's exception once it ended (None if it succeeded), waiting up to ``timeout`` seconds;
        a timeout raises ``TimeoutError`` as :meth:`result` does."""
        timeout = check_timeout(timeout, "exception(timeout=...)")
        refuse_wait_on_loop_thread([self], timeout)
        try:
            return super().exception(timeout)
        except TimeoutError:
            if self.done():
                raise
            raise TimeoutError(self._timeout_message(timeout)) from None

    def _timeout_message(self, timeout: float | None) -> str:
        status = self.status
        queue = self._record.get("queue") or (self.job.queue_name if self.job else "?")
        msg = f"job {self.job_id} ({self.name}) did not finish within {timeout:g}s; it is {status}"
        if status == "unknown":  # (attached by id, and no record of it came)
            return msg + (
                ": this server has no record of it (a wrong id, records expired, or a store that was "
                "deleted or started empty); nq.job(id) says which"
            )
        if status in TERMINAL_VALUES:  # (its result comes apart from its status, or is gone: then it says so)
            return msg + ": it ended, but its result has not reached this client yet; call .result() again"
        if status not in ("queued", "waiting", "retrying"):
            return msg + " (it keeps running: call .result() again to wait longer)"
        try:
            # Bounded: the caller's timeout is over already, and a server that is gone would make a
            # reconnect wait its whole connect timeout.
            n = sum(queue in (w.get("queues") or ()) for w in run_sync(self.client.workers(), _HINT_TIMEOUT))
        except Exception as exc:  # the hint is optional: the timeout itself must still be reported
            log.debug("no worker hint for the timeout of %s: %s", self.job_id, exc)
            return msg
        if n == 0:
            return (
                msg + f" and NO worker serves queue {queue!r}: start one (in a notebook "
                f"nq.local(queues=[{queue!r}]), in a terminal `naq worker {queue}`)"
            )
        return msg + f"; {n} worker(s) serve queue {queue!r} and are busy: wait longer, or add workers"

    async def result_async(self, timeout: float | None = None) -> Any:
        """Await the result from any event loop (raises the job's exception)."""
        await self._wait_async(timeout)
        return self.result(0)

    async def exception_async(self, timeout: float | None = None) -> BaseException | None:
        """Await the job's end; its exception, or None if it succeeded."""
        await self._wait_async(timeout)
        return self.exception(0)

    async def _wait_async(self, timeout: float | None) -> None:
        timeout = check_timeout(timeout)
        if self.done():
            return
        await _refollow_awaited()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def _wake(_f: concurrent.futures.Future) -> None:
            if not waiter.done():
                waiter.set_result(None)

        def _done(f: concurrent.futures.Future) -> None:
            try:
                loop.call_soon_threadsafe(_wake, f)
            except RuntimeError:  # the awaiting loop is closed
                pass

        # Not asyncio.wrap_future: cancelling that wrapper would cancel (remotely!) the job.
        self._on_done(_done)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"job {self.job_id} did not finish within {timeout:g}s") from None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()

    # --- cancel -----------------------------------------------------------------
    def cancel(self) -> bool:
        """Cancel the job remotely (queued, waiting, scheduled or running).

        True if it got cancelled (``.result()`` then raises
        ``concurrent.futures.CancelledError``); False if it had already ended.
        """
        if self.done():
            return self.cancelled()
        ok = self.client.cancel_sync(self.job_id, self._sequence())
        return self._after_cancel(ok)

    async def cancel_async(self) -> bool:
        """Async form of :meth:`cancel`."""
        if self.done():
            return self.cancelled()
        ok = await self.client.cancel(self.job_id, self._sequence())
        return self._after_cancel(ok)

    def _sequence(self) -> int | None:
        return self.job.sequence if self.job is not None else None

    def _after_cancel(self, ok: bool) -> bool:
        if ok:
            self._cancel_local()
        return ok

    def _cancel_local(self) -> None:
        if self._mark_cancelled():
            self._outcome = JobStatus.CANCELLED.value
            self._record = with_status(self._record, JobStatus.CANCELLED)
            self._notify()

    def _mark_cancelled(self) -> bool:
        """Cancel the Future itself (not the job); True if this call did it.

        Future.cancel() alone does not wake concurrent.futures.wait(); the notify
        does, and it may run once only, hence the lock (the loop thread and the
        caller can both get here).
        """
        with self._condition:  # an RLock: cancel() below takes it again
            if self.done():
                return False
            concurrent.futures.Future.cancel(self)
            self.set_running_or_notify_cancel()
            return True

    # --- live state ---------------------------------------------------------------
    @property
    def status(self) -> str:
        """The latest known status: queued, waiting, scheduled, running, retrying, succeeded, failed, cancelled."""
        if self.cancelled():
            return JobStatus.CANCELLED.value
        return str(self._record.get("status") or "unknown")

    @property
    def record(self) -> dict:
        """The latest status record (timings, attempts, worker, progress, logs, error, ...)."""
        return dict(self._record)

    @property
    def progress(self) -> dict | None:
        """``{"done", "total", "message"}`` as reported by the job, or None."""
        r = self._record
        if r.get("progress") is None and r.get("message") is None:
            return None
        return {"done": r.get("progress"), "total": r.get("total"), "message": r.get("message")}

    @property
    def logs(self) -> list[str]:
        """Captured stdout/stderr and ``nq.log`` lines (the latest ones)."""
        return list(self._record.get("logs") or [])

    @property
    def name(self) -> str:
        """The job's display name, else its function's qualified name."""
        r = self._record
        return str(r.get("name") or r.get("func") or (self.job.function_name if self.job else "") or "?")

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or until now while running)."""
        start = self._record.get("started_at")
        if not start:
            return None
        end = self._record.get("finished_at") or (None if self.done() else time.time())
        return None if end is None else max(0.0, end - start)

    def on_update(self, cb: Callable[["JobFuture"], None]) -> Callable[[], None]:
        """Call ``cb(self)`` on naq_nb's loop thread after every status or result change.

        Returns a function that unsubscribes. ``cb`` must be quick and must not make
        blocking naq_nb calls (use the async forms there).
        """
        self._listeners.append(cb)

        def unsubscribe() -> None:
            try:
                self._listeners.remove(cb)
            except ValueError:
                pass

        return unsubscribe

    # --- called by the watch on the loop thread ------------------------------------
    def _apply_status(self, rec: StatusRecord) -> None:
        status = rec.get("status")
        if self.done() and status not in TERMINAL_VALUES:
            return  # a stale record dispatched after the result
        if self._outcome is not None and status != self._outcome:
            # The result is written once and decides how the job ended. A cancel that lost the race
            # to it leaves a `cancelled` mark, newer than the run's own final status, which the
            # result's subscription may even deliver first: it must not relabel the outcome.
            return
        if rec.get("updated_at", 0) < self._record.get("updated_at", 0):
            return
        self._record = rec
        self._notify()

    def _apply_result(self, res: ResultRecord) -> None:
        meta = res.meta
        if meta.get("refused"):
            # No usable result (gone after NAQ_RESULT_TTL, unreadable, refused): that says nothing of
            # how the job ended, so a status record that already says it stands.
            stands = self._record.get("status") in TERMINAL_VALUES
        else:
            self._outcome = res.status
            stands = self._record.get("status") == res.status  # else none yet, a live one, or a cancel's mark
        if not stands:
            extra: dict[str, Any] = {
                k: meta[k]
                for k in ("finished_at", "error", "traceback", "worker", "attempts", "started_at")
                if meta.get(k) is not None
            }
            self._record = with_status(self._record, res.status, drop=("error", "traceback"), **extra)
        try:
            if res.status == JobStatus.CANCELLED.value:
                self._mark_cancelled()
            elif res.ok:
                try:
                    value = res.value()
                except Exception as exc:
                    self.set_exception(
                        SerializationError(
                            f"the result of job {self.job_id} cannot be decoded here: {type(exc).__name__}: {exc}"
                        )
                    )
                else:
                    self.set_result(value)
            else:
                self.set_exception(_localized(res.exception(), self.job))
        except concurrent.futures.InvalidStateError:
            pass  # cancelled locally meanwhile
        self._notify()

    def _apply_failure(self, exc: BaseException) -> None:
        """End with ``exc``, not the job's outcome (what waits for it can no longer learn that)."""
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            return  # cancelled or resolved meanwhile
        self._notify()

    def _notify(self) -> None:
        for cb in list(self._listeners):
            try:
                cb(self)
            except Exception:
                log.exception("on_update callback %r failed for job %s", cb, self.job_id)

    # --- display ------------------------------------------------------------------------
    def __repr__(self) -> str:
        extra = ""
        p = self.progress
        if p and p.get("total"):
            extra = f" {p['done']:g}/{p['total']:g}"
        err = self._record.get("error")
        if err and self.status == JobStatus.FAILED.value:
            extra += f" error={err!r}"
        return f"<JobFuture {self.job_id} {self.name} {self.status}{extra}>"

    def _repr_html_(self) -> str:
        r = self._record
        rows: list[tuple[str, Any]] = [
            ("job", self.job_id),
            ("function", self.name),
            ("status", self.status),
            ("queue", r.get("queue") or (self.job.queue_name if self.job else "")),
            ("attempts", r.get("attempts", "")),
            ("worker", r.get("worker") or ""),
        ]
        d = self.duration
        if d is not None:
            rows.append(("duration", f"{d:.3f} s"))
        p = self.progress
        if p:
            rows.append(("progress", f"{p.get('done')}/{p.get('total')} {p.get('message') or ''}"))
        if r.get("error"):
            rows.append(("error", r["error"]))
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        return f"<table class='naq-job'>{cells}</table>"

    def _ipython_display_(self) -> None:
        hook = display_hook
        if hook is not None:
            hook(self)
            return
        from IPython.display import display

        display({"text/plain": repr(self), "text/html": self._repr_html_()}, raw=True)


def _localized(exc: BaseException, job: Job | None) -> BaseException:
    """The worker's traceback with the user's own code lines put back (see :mod:`.remote_tb`)."""
    tb = getattr(exc, "remote_traceback", "")
    fn = job.function if job is not None else None
    if not tb or not callable(fn):
        return exc
    from .remote_tb import localize

    new = localize(tb, fn)
    if new != tb:
        exc.remote_traceback = new  # type: ignore[attr-defined]
        notes = getattr(exc, "__notes__", None)
        if notes:
            exc.__notes__ = [n.replace(tb.rstrip(), new.rstrip()) for n in notes]
    return exc


def _initial_record(job: Job) -> StatusRecord:
    # updated_at 0: any real record from the server replaces it.
    return first_record(
        job.job_id,
        job.queue_name,
        initial_status(job.options.depends_on),
        func=job.function_name,
        name=job.options.name,
        enqueued_at=job.enqueue_time,
        updated_at=0,
    )


async def _submit_on_loop(client: "Client", jobs: list[Job]) -> list[JobFuture]:
    watch = get_watch(client)
    futs = [JobFuture(j.job_id, client, j) for j in jobs]
    for f, j in zip(futs, jobs):
        f._record = _initial_record(j)
    # Registered before publishing, on a subscription the server already has: nothing to fetch.
    await watch.register(futs, fetch=False)
    for f in futs:
        f._sending = True
    try:
        await client.enqueue_jobs(jobs, push=False)  # the watch brings the result
    except BaseException:
        for f in futs:
            watch.unregister(f)
        raise
    finally:
        for f in futs:
            f._sending = False
    for f in futs:  # a store still unacknowledged: its failure fails the future
        _fail_if_not_stored(client, f, watch)
    dups = [f for f in futs if f.job is not None and f.job.duplicate]
    if dups:  # dropped as a repeat of a keyed job: follow the earlier one
        b = await watch.ensure_started()
        await watch._fetch(b, dups)
    return futs


def _fail_if_not_stored(client: "Client", fut: JobFuture, watch: Any) -> None:
    pending = client._stores.check(fut.job_id)
    if pending is None:
        return

    def _done(p: concurrent.futures.Future) -> None:  # on the loop thread, where stores settle
        exc = p.exception()
        if exc is None or fut.done():
            return
        watch.unregister(fut)
        fut._record = {**fut._record, "status": JobStatus.FAILED.value, "error": str(exc)}
        try:
            fut.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            return  # cancelled meanwhile
        fut._notify()

    pending.add_done_callback(_done)


def refuse_wait_on_loop_thread(futures: "Iterable[JobFuture]", timeout: float | None) -> None:
    """Raise if a blocking wait for ``futures`` would run on naq_nb's loop thread (in an ``on_update``
    callback): that thread resolves every future, so the wait could only end by its timeout, and
    with none it would hang every naq_nb call for ever. A wait that cannot block (every future
    done, or ``timeout=0``) is allowed, so a callback may still read its own job's result."""
    if timeout != 0 and not all(f.done() for f in futures):
        check_not_loop_thread()
        _refollow()  # (a forked child: the futures it inherited are followed again first)


async def submit_jobs(client: "Client", jobs: list[Job]) -> list[JobFuture]:
    """Publish prepared jobs (pipelined) and return their futures, from any event loop."""
    return await run_async(_submit_on_loop(client, jobs))


submit_jobs_sync = blocking(submit_jobs)


async def attach_many(client: "Client", job_ids: list[str]) -> list[JobFuture]:
    """Futures for many existing job ids with one registration (fetches run concurrently)."""
    futs = [JobFuture(j, client) for j in job_ids]
    await register(client, futs, fetch=True)
    return futs


_callbacks: concurrent.futures.ThreadPoolExecutor | None = None  # made at the first callback it runs
_callbacks_lock = threading.Lock()


def _off_the_loop(fn: Callable[[concurrent.futures.Future], object], fut: concurrent.futures.Future) -> None:
    global _callbacks
    if not in_loop_thread():
        fn(fut)  # (its exception is logged by concurrent.futures, as for any callback)
        return
    with _callbacks_lock:
        if _callbacks is None:
            _callbacks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="naq-callbacks")
        try:
            _callbacks.submit(_logged, fn, fut)
            return
        except RuntimeError:  # the interpreter is exiting: no new thread may start; run it here
            pass
    _logged(fn, fut)


def _logged(fn: Callable[[concurrent.futures.Future], object], fut: concurrent.futures.Future) -> None:
    try:
        fn(fut)
    except Exception:
        log.exception("exception calling callback for %r", fut)


def _forget_callbacks_thread() -> None:
    global _callbacks
    _callbacks = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_callbacks_thread)
