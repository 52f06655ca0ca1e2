"""The client: a connection owned by the background loop, with sync and async calls.

``Client(url, **nats_options)`` connects lazily on first use. Every method
``m`` has an awaitable form ``await client.m(...)`` and a blocking form
``client.m_sync(...)``; both run on naq_nb's loop thread, so they behave the
same in a script, inside Jupyter's running loop and from worker threads.

Two shortcuts keep the per-call cost near one round trip, or none:

* a plain enqueue (no chosen id, body within ``max_payload``) is encoded and
  handed to the loop's outbox, whose sender publishes it and checks the
  acknowledgements in the background (:mod:`.stores` keeps failures from being
  silent); ``enqueue_sync`` and the other blocking forms do this on the loop
  thread (one hop), :meth:`Client.enqueue_jobs_sync` in the caller's thread;
* reads (``result``, ``status``) from an async caller run on the caller's own
  loop, over a connection of that loop (:meth:`Client.broker_here`), from the
  loop's second naq_nb call on; once that connection is up, a job that loop
  enqueues with nothing else in flight is written on it within the call
  (acknowledged on the background loop, so a caller that then blocks its loop
  still gets it stored) and its result is pushed to it (:mod:`.inbox`): one job
  at a time crosses no thread either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import nats.errors
from nats.js.errors import APIError

from ..core import withdraw
from ..core.broker import Broker
from ..core.errors import JobNotFoundError, JobNotStoredError, NaqConnectionError, NoAnswerError
from ..core.failed import FailedEntry, list_failed, requeue_failed
from ..core.job import Job, JobOptions
from ..core.cancel import cancel_job, purge_queue
from ..core.connecting import check_connect_options
from ..core.jobsend import direct_send, prepare_unacked, publish_direct, publish_prepared
from ..core.queue import Queue as CoreQueue, get_status, make_job
from ..core.records import ResultRecord
from ..core.registry import WorkerRecord, list_workers
from ..core.results import unrecorded_status, wait_for_result
from ..core.settings import Settings, redact_url
from ..core.status import StatusRecord
from .loop import (
    any_loop,
    call_soon,
    exit_flush_covers,
    in_loop_thread,
    on_loop_close,
    run_async,
    run_sync,
    sweep_closed_loops,
)
from .inbox import ResultInbox
from .outage import no_answer, refuse_unsent, until_reachable, within
from .stores import Stores
from .twins import blocking, on_loop

log = logging.getLogger("naq_nb.client")

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A NATS connection for enqueuing, watching and managing jobs."""

    def __init__(self, nats_url: str | None = None, *, settings: Settings | None = None, **nats_options: Any) -> None:
        self.settings = (settings or Settings.from_env()).with_(**({"nats_url": nats_url} if nats_url else {}))
        check_connect_options(nats_options)
        self.nats_options = nats_options
        self._close_listeners: list[Callable[[], None]] = []
        self.gone_note: str | None = None  # set by nq.local() closing its temporary store too: see watch.end
        self.watch: Any = None  # the JobWatch of this client's futures (watch.get_watch makes it)
        self._fresh_state()
        _every_client.add(self)

    def on_close(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` on the loop thread each time :meth:`close` has closed the connections (the
        futures' watch then fails what it can no longer resolve)."""
        self._close_listeners.append(cb)

    def _fresh_state(self) -> None:
        """Connections and enqueues in flight: none yet (also in a forked child, where the parent's
        loop thread, sockets and acknowledgements did not come along)."""
        self._broker: Broker | None = None
        self._connecting: asyncio.Future | None = None
        self._here: dict[asyncio.AbstractEventLoop, asyncio.Future] = {}  # caller loop -> its broker
        self._here_lock = threading.Lock()
        # Connects of caller loops that close() came for (closed once made): weak, they go with their loops.
        self._closed_connects: weakref.WeakSet[asyncio.Future] = weakref.WeakSet()
        self._stores = Stores()
        self._inbox = ResultInbox()  # results of this client's jobs, pushed by their workers
        self._outbox: list[tuple[Broker, Job, tuple, concurrent.futures.Future]] = []  # handed over, not sent
        self._outbox_lock = threading.Lock()
        self._sender: asyncio.Future | None = None  # the loop's task sending the outbox
        self._direct: set[concurrent.futures.Future] = set()  # stores of jobs sent by callers' loops, in flight

    @property
    def url(self) -> str:
        """The server URL(s) for display: credentials in it are shown as ``***``."""
        return redact_url(self.settings.nats_url)

    async def broker(self) -> Broker:
        """The connected :class:`Broker` (call on the loop thread only)."""
        have = self._broker
        if have is not None and not have.nc.is_closed:
            await have.ensure_layout()  # (at once when ready; checked again after a reconnect or a lost stream)
            return have
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(Broker.connect(settings=self.settings, **self.nats_options))
        try:
            b = await asyncio.shield(self._connecting)
        finally:
            if self._connecting.done() and self._connecting.exception() is not None:
                self._connecting = None
        try:
            await b.ensure_layout()
            await self._inbox.subscribe(b)  # before any job of this connection names it
        except Exception:
            # No JetStream, or no answer: the next call connects afresh, so this connection goes now.
            if self._connecting is not None and self._connecting.done() and not self._connecting.cancelled():
                self._connecting = None
            await b.close(drain=False)
            raise
        self._broker = b
        return b

    async def broker_here(self) -> Broker:
        """The connected :class:`Broker` of the running loop: :meth:`broker` on the background
        loop, else a connection made for (and closed with) the caller's loop."""
        if in_loop_thread():
            return await self.broker()
        loop = asyncio.get_running_loop()
        with self._here_lock:
            task = self._here.get(loop)
            if task is None or (
                task.done() and (task.cancelled() or task.exception() is not None or task.result().nc.is_closed)
            ):
                for lp in [lp for lp in self._here if lp.is_closed()]:
                    del self._here[lp]  # closed without shutting down: nothing can run there any more
                sweep_closed_loops()
                task = self._here[loop] = loop.create_task(self._connect_here(loop))
        b = await asyncio.shield(task)
        if task in self._closed_connects:  # close() came while it connected: it is closed once made
            raise NaqConnectionError("the client was closed while this call connected; call again to reconnect")
        await b.ensure_layout()  # as in broker()
        return b

    async def _connect_here(self, loop: asyncio.AbstractEventLoop) -> Broker:
        b = await Broker.connect(settings=self.settings, **self.nats_options)
        try:
            await b.ensure_layout()
            await self._inbox.subscribe_here(b)  # its pushes arrive on this loop: no thread hop
            await on_loop_close(lambda: self._drop_here(loop, b))
        except BaseException:
            await b.close(drain=False)
            raise
        return b

    async def _drop_here(self, loop: asyncio.AbstractEventLoop, b: Broker) -> None:
        with self._here_lock:
            task = self._here.get(loop)
            if (
                task is not None
                and task.done()
                and not task.cancelled()
                and task.exception() is None
                and task.result() is b
            ):
                del self._here[loop]
        self._inbox.expect_none(loop)  # its pushes went with its connection
        await b.close(drain=False)  # the loop is ending: its other tasks are cancelled already

    def _close_here(self) -> None:
        """Close the connections of caller loops, each on its own loop (without waiting for them). A
        connection still being made is closed once made: cancelling it would raise CancelledError in
        the call awaiting it (which reads as its own cancellation) and leave a half-made connection."""
        with self._here_lock:
            tasks, self._here = self._here, {}
            self._closed_connects.update(tasks.values())
        for loop, task in tasks.items():
            try:
                loop.call_soon_threadsafe(_close_when_made, task)
            except RuntimeError:  # the loop is closed: nothing can run there any more
                pass

    # --- jobs --------------------------------------------------------------
    async def enqueue_jobs(self, jobs: list[Job], *, push: bool = True) -> list[Job]:
        """Publish prepared jobs (pipelined).

        A single plain job returns once handed to the loop (or, from an async caller with nothing in
        flight, once written on its own loop's connection); its store is confirmed in the background (a
        failure fails its handle's reads and is raised by the next enqueue, :meth:`flush` or
        :meth:`close`). A single job's result is pushed back to this client (:mod:`.inbox`) unless
        ``push=False`` (futures get theirs through their watch).
        """
        oldest = self._stores.oldest_if_full()
        if oldest is not None:  # wait for room; its failure, if any, is raised once, just below
            await asyncio.wait([asyncio.wrap_future(oldest)])
        self._stores.raise_unreported()
        if not in_loop_thread() and not self._stores.in_flight and await self._send_direct(jobs, push):
            return jobs
        if self._hand_over(jobs, push):  # handed over: a failure found now is raised by the next call
            return jobs
        return await run_async(self._enqueue_acked(jobs, push))

    def enqueue_jobs_sync(self, jobs: list[Job], *, push: bool = True) -> list[Job]:
        """Blocking form of :meth:`enqueue_jobs`, hand-written (not made by ``twins.blocking``): a plain
        job is encoded and handed over in the caller's thread, with no hop to the loop."""
        oldest = self._stores.oldest_if_full()
        if oldest is not None and not in_loop_thread():
            concurrent.futures.wait([oldest])
        self._stores.raise_unreported()
        if self._hand_over(jobs, push):  # handed over: a failure found now is raised by the next call
            return jobs
        return run_sync(self._enqueue_acked(jobs, push))

    async def _enqueue_acked(self, jobs: list[Job], push: bool) -> list[Job]:
        b = await self.broker()
        # A dependency this client handed over may not be stored yet: its dependent must not reach
        # a worker first (it would be failed as depending on a job that does not exist).
        await self._stores.wait_quietly({d for job in jobs for d in job.options.depends_on})
        await refuse_unsent(b, jobs, self.url)
        self._mark_for_push(jobs, push)
        try:
            await CoreQueue(b).enqueue_jobs(jobs)
        except JobNotStoredError as exc:  # some of a batch: their handles' reads raise it too
            self._stores.reported(exc.not_stored, exc)
            raise
        except BaseException:
            for job in jobs:
                self._inbox.unexpect(job.job_id)
            raise
        for job in jobs:
            if job.duplicate:  # that job (same id, same call) was sent before, without this client's mark
                self._inbox.unexpect(job.job_id)
        self._stores.mark_unrecorded((job.job_id, job.sequence) for job in jobs if job.unrecorded)
        return jobs

    def _mark_for_push(self, jobs: list[Job], push: bool, here: Broker | None = None) -> None:
        """A job enqueued on its own gets its result pushed to this client (see :mod:`.inbox`); a
        batch does not (a sweep's results come through its watch, and unread pushes would pile up).
        ``here``: the job goes out on that connection of the caller's loop, and its push comes back
        there, so an ``await`` of the result on that loop needs no thread hop either."""
        if not push or len(jobs) != 1:
            return
        token = None if here is None else self._inbox.token_here(here)
        if token is not None:
            jobs[0].reply = token
            self._inbox.expect(jobs[0].job_id, asyncio.get_running_loop())
        elif self._inbox.open:
            jobs[0].reply = self._inbox.token
            self._inbox.expect(jobs[0].job_id)

    def _hand_over(self, jobs: list[Job], push: bool) -> bool:
        """Encode one plain job here and hand it to the loop without waiting; False: not eligible
        (several jobs, a chosen id, a big body, or no connection ready yet)."""
        b = self._unacked_ok(jobs)
        if b is None:
            return False
        job = jobs[0]
        self._mark_for_push(jobs, push)
        prepared = prepare_unacked(b, job)
        if prepared is None:
            return False
        self._put_outbox(b, job, prepared)
        return True

    def _unacked_ok(self, jobs: list[Job]) -> Broker | None:
        """The background loop's broker if ``jobs`` (one plain job) may be stored without the caller
        waiting for its acknowledgements; None: the full path. A dependency still in flight from
        here: the full path waits for that store first."""
        b = self._broker
        if len(jobs) != 1 or b is None or not b.is_connected or not b.layout_ready or not exit_flush_covers():
            return None
        return None if self._stores.any_pending(jobs[0].options.depends_on) else b

    def _put_outbox(self, b: Broker, job: Job, prepared: tuple[dict, bytes, bytes]) -> None:
        fut = self._stores.begin(job.job_id)
        with self._outbox_lock:
            self._outbox.append((b, job, prepared, fut))
            wake = len(self._outbox) == 1
        if wake:  # one wake-up of the loop per burst: each one costs the caller a thread switch
            call_soon(self._send_outbox)

    async def _send_direct(self, jobs: list[Job], push: bool) -> bool:
        """One job at a time from an async caller whose loop has a connection of its own: the job goes
        out on it, written within the call, its acknowledgements coming to the background loop
        (:func:`~naq_nb.core.jobsend.publish_direct`): no thread hop, and the job is out even if the
        caller then blocks its loop. Its result is pushed back to that connection. False: not
        eligible (as :meth:`_hand_over`, or no such connection yet). A burst (jobs in flight) is
        handed over instead: the background loop writes it in batches, and takes its pushes."""
        here, bg = self._broker_ready_here(asyncio.get_running_loop()), self._unacked_ok(jobs)
        if here is None or bg is None:
            return False
        job = jobs[0]
        # This loop's connection receives the pushes: a caller enqueuing one job at a time without
        # awaiting anything else must still let it read them (else the server drops a slow consumer).
        # Before the job is sent: a cancel landing here leaves nothing sent.
        await asyncio.sleep(0)
        if not await here.until_writable(bg.publish_timeout) or self._stores.in_flight:
            return False  # (jobs enqueued meanwhile, from another loop or thread, go first)
        self._mark_for_push(jobs, push, here)
        prepared = prepare_unacked(here, job)
        if prepared is None:  # (the full path marks it again)
            self._inbox.unexpect(job.job_id)
            job.reply = None
            return False
        send = direct_send(here, bg, job, prepared)
        if send is None:  # (too big to be sure it leaves within the call, say)
            self._put_outbox(bg, job, prepared)  # encoded already; its push still comes to this loop
            return True
        fut = self._stores.begin(job.job_id)
        with self._outbox_lock:  # before it is sent: jobs handed over from now on wait for it
            self._direct.add(fut)
        publish_direct(here, bg, job, send, functools.partial(self._stored, job, fut))
        return True  # (no await from the write on: a cancel can't undo a sent job's return)

    def _broker_ready_here(self, loop: asyncio.AbstractEventLoop) -> Broker | None:
        task = self._here.get(loop)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        b = task.result()
        return b if b.is_connected else None

    def _send_outbox(self) -> None:
        # One sender at a time, so one producer's jobs are published in the order it enqueued them.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while True:
            with self._outbox_lock:
                items, self._outbox = self._outbox, []
            if not items:
                return
            await self._after_direct_sends()
            for b, job, prepared, fut in items:
                await publish_prepared(b, job, prepared, functools.partial(self._stored, job, fut))

    async def _after_direct_sends(self) -> None:
        """Jobs sent on callers' loops' connections before the ones about to be written here are
        stored first, so each caller's jobs keep their order (within the publish timeout; a failure
        is its own handle's)."""
        with self._outbox_lock:
            self._direct -= {f for f in self._direct if f.done()}
            pending = list(self._direct)
        if pending:
            sent = [asyncio.wrap_future(f) for f in pending]
            # Each ends within the publish timeout (its acknowledgement's); the bound is a backstop.
            await asyncio.wait(sent, timeout=2 * self.settings.publish_timeout + 1.0)
            for f in sent:
                if f.done() and not f.cancelled():
                    f.exception()  # retrieved: a failure is its own handle's

    def _stored(self, job: Job, fut: concurrent.futures.Future, exc: BaseException | None) -> None:
        if exc is None:
            self._stores.stored(job.job_id, fut, job.sequence, job.unrecorded)
        else:  # every failure goes to the job's handle and to the client's next call
            self._inbox.unexpect(job.job_id)
            self._stores.failed(
                job.job_id,
                fut,
                JobNotStoredError(
                    f"job {job.job_id} ({job.function_name}) {_not_stored(exc)}: {type(exc).__name__}: {exc}"
                ),
            )

    async def wait_stored(self, job_id: str) -> None:
        """Wait until this client's enqueue of ``job_id`` is acknowledged (at once if none is in flight):
        a lookup by id right after a plain enqueue then finds the job. Raises :class:`JobNotStoredError`
        if that enqueue was not stored."""
        await self._stores.settled(job_id)

    wait_stored_sync = blocking(wait_stored)

    @on_loop
    async def flush(self) -> None:
        """Wait until every enqueue made so far is stored; raise :class:`JobNotStoredError` for any
        that was not (and was not reported yet)."""
        await self._stores.drain()
        self._stores.raise_unreported()

    flush_sync = blocking(flush)

    def make_job(
        self,
        fn: Callable[..., Any] | str,
        args: Sequence = (),
        kwargs: dict | None = None,
        options: JobOptions | None = None,
    ) -> Job:
        """Build (and check) a job without sending it; the default queue comes from settings."""
        return make_job(fn, args, kwargs, options, queue=self.settings.default_queue)

    @on_loop
    @any_loop
    async def status(self, job_id: str) -> StatusRecord:
        """The job's status record (raises JobNotFoundError)."""
        await self._stores.settled(job_id)
        b = await self.broker_here()
        if not b.is_connected:  # (the per-call path pays this flag only)
            await self._reachable(b, None, f"reading the status of job {job_id}")
        try:
            return await get_status(b, job_id)
        except nats.errors.TimeoutError as exc:
            raise self._no_answer(f"reading the status of job {job_id}") from exc
        except JobNotFoundError:
            # Stored by this client without its queued record (the connection dropped before its
            # acknowledgement): queued while its message is, else read again (it may have just ended).
            seq = self._stores.unrecorded_seq(job_id)
            rec = None if seq is None else await unrecorded_status(b, job_id, seq)
            if rec is not None:
                return rec
            if seq is None:
                raise
            return await get_status(b, job_id)

    status_sync = blocking(status)

    @on_loop
    @any_loop
    async def result_record(self, job_id: str, timeout: float | None = None) -> ResultRecord:
        """Wait for the job's result record: pushed to this client by the worker for a job it
        enqueued, else by a subscription on the result key."""
        return await self._result_record(job_id, timeout)

    result_record_sync = blocking(result_record)

    @on_loop
    @any_loop
    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's return value; raises its exception (original type where possible)."""
        return (await self._result_record(job_id, timeout)).unwrap()

    result_sync = blocking(result)

    async def _result_record(self, job_id: str, timeout: float | None) -> ResultRecord:
        await self._stores.settled(job_id)
        b = await self.broker_here()
        expected = self._inbox.expects(job_id)
        pushed = self._inbox.wait(job_id)
        try:
            if not b.is_connected:  # (the per-call path pays this flag only)
                timeout = await self._reachable(b, timeout, f"reading the result of job {job_id}")
            seq = self._stores.unrecorded_seq(job_id)  # stored without its queued record: waited for while queued
            read = wait_for_result(b, job_id, timeout, pushed=pushed, push_expected=expected, queued_seq=seq)
            if pushed is not None and pushed.done() and not pushed.cancelled() and pushed.result():
                rec = await read  # pushed already: no server to wait on (a bound costs 4 us, a quarter of this read)
            else:
                rec = await within(read, timeout, self.url, f"reading the result of job {job_id}")
        except BaseException as exc:
            self._inbox.forget(job_id, pushed)
            if isinstance(exc, nats.errors.TimeoutError):
                raise self._no_answer(f"reading the result of job {job_id}") from exc
            raise
        self._inbox.forget(job_id, pushed, read=True)
        return rec

    async def _reachable(self, b: Broker, timeout: float | None, what: str) -> float | None:
        return await until_reachable(b, timeout, self.url, what)  # (see .outage)

    async def _ask(self, what: str, fn: Callable[[Broker], Awaitable[T]]) -> T:
        """``fn(broker)`` on the background loop's connection, its outage named as in the reads."""
        b = await self.broker()
        await self._reachable(b, None, what)
        try:
            return await fn(b)
        except nats.errors.TimeoutError as exc:
            raise self._no_answer(what) from exc

    def _no_answer(self, what: str) -> NoAnswerError:
        return no_answer(self.url, what)

    @on_loop
    async def cancel(self, job_id: str, sequence: int | None = None) -> bool:
        """Cancel a job that has not ended; False if it already had."""
        await self._stores.settled(job_id)  # a job still in flight: its sequence comes with the ack
        seq = sequence or self._stores.sequence(job_id)
        return await self._ask(f"cancelling job {job_id}", lambda b: cancel_job(b, job_id, seq))

    cancel_sync = blocking(cancel)

    @on_loop
    async def cancel_many(self, jobs: Sequence[Job]) -> dict[str, str]:
        """Cancel ``jobs`` together (see :func:`naq_nb.core.withdraw.cancel_many`): each job id's
        outcome, ``cancelled``, ``ended``, ``not stored`` or ``left``."""
        await self._stores.drain()  # jobs still in flight: their sequences come with their acks
        known = {j.job_id: seq for j in jobs if (seq := self._stores.sequence(j.job_id))}
        return await self._ask(f"cancelling {len(jobs)} jobs", lambda b: withdraw.cancel_many(b, jobs, known))

    cancel_many_sync = blocking(cancel_many)

    @on_loop
    async def purge(self, queue: str | None = None) -> int:
        """Drop every queued job of ``queue``, this client's enqueues still in flight included;
        returns how many."""
        await self._stores.drain()  # else one acknowledged after the purge would come back
        return await self._ask("purging a queue", lambda b: purge_queue(b, CoreQueue(b, queue).name))

    purge_sync = blocking(purge)

    @on_loop
    async def queue_size(self, queue: str | None = None) -> int:
        """Jobs waiting in ``queue``, counting every enqueue this client made before the call."""
        await self._stores.drain()
        return await self._ask("counting a queue", lambda b: CoreQueue(b, queue).count())

    queue_size_sync = blocking(queue_size)

    @on_loop
    async def workers(self) -> list[WorkerRecord]:
        """Live workers from their heartbeats."""
        return await self._ask("listing workers", list_workers)

    workers_sync = blocking(workers)

    @on_loop
    async def failed(self, queue: str | None = None, limit: int = 1000) -> list[FailedEntry]:
        """Jobs in the failed stream (out of retries, or undecodable)."""
        return await self._ask("listing failed jobs", lambda b: list_failed(b, queue, limit))

    failed_sync = blocking(failed)

    @on_loop
    async def requeue(self, ref: str | int) -> str:
        """Put a failed job back on its queue: by job id, or by failed-stream sequence (an int or
        ``"#N"``; an all-digit string is a job id when a failed job has it, else a sequence)."""
        return await self._ask(f"requeuing {ref!r}", lambda b: requeue_failed(b, ref))

    requeue_sync = blocking(requeue)

    @on_loop
    async def close(self) -> None:
        """Wait for enqueues in flight, close every connection of this client (a later call
        reconnects), then raise :class:`JobNotStoredError` for any enqueue that was not stored."""
        await self._stores.drain()
        self._close_here()
        if self._broker is not None:
            b, self._broker = self._broker, None
            await b.close()
        self._inbox.expect_none(every=True)  # no push comes to a closed connection
        for cb in list(self._close_listeners):
            cb()
        self._stores.raise_unreported()

    close_sync = blocking(close)

    def __await__(self) -> Any:
        # naq's `c = await connect(url)`: nq.connect() has connected already; awaiting gives the client back.
        return self._itself()

    def _itself(self) -> Any:
        return self
        yield  # a generator that finishes at once with the client as its value

    def __repr__(self) -> str:
        return f"<naq_nb.Client {self.url}>"


def _close_when_made(task: asyncio.Future) -> None:
    """On the task's loop: close the broker the connect task makes, now or once it is made."""

    def close(t: asyncio.Future) -> None:
        if not t.cancelled() and t.exception() is None:
            asyncio.ensure_future(t.result().close())

    if task.done():
        close(task)
    else:
        task.add_done_callback(close)


_every_client: "weakref.WeakSet[Client]" = weakref.WeakSet()  # for the exit check of enqueues in flight


def _after_fork_in_child() -> None:
    for c in list(_every_client):
        c._fresh_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _not_stored(exc: BaseException) -> str:
    # The server's own error answer is certain; a missing answer (a timeout, a dropped connection) is not.
    if isinstance(exc, APIError):
        return "was refused by the server, so it is not stored"
    return "was not acknowledged, so it may not have been stored"
