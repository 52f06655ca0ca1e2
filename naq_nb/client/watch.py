"""Push updates for job futures: two wildcard subscriptions per client, dispatched by job id.

A :class:`JobWatch` holds ONE core-NATS subscription on the status bucket's
subject space and ONE ordered JetStream consumer on the results bucket's, on
the background loop. Each record is routed by its exact key (the subject after
``$KV.<bucket>.``; a key ``zz.<id>`` is not ``<id>``) to the futures registered
for that job, so a 10,000-job sweep costs two subscriptions, not 10,000, and
nothing polls. Results come from the stream, not from core interest: a result
write the server refused (a second run's create-only write, a forged publish)
is seen by core subscribers but never stored, and so never reaches a future.

Futures registered *before* their job is published need no fetch (the
subscription is live first); futures attached to an existing job fetch the
current status and result once after registering, so an update that landed
in between is never missed; those reads are batched (``kvscan.read_keys``), so
re-attaching a 10,000-point sweep costs about 20 requests, not 20,000.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

import nats.errors
from nats.js import api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from ..core import payloads
from ..core.errors import JobNotFoundError, JobNotStoredError, NaqConnectionError, SerializationError
from ..core.job import JobStatus
from ..core.records import ResultRecord
from ..core.status import TERMINAL_VALUES, StatusRecord, decode_status
from ..core.kvscan import read_keys
from ..core.results import decode_result, result_gone_error
from .loop import call_soon, run_async, run_sync
from .twins import blocking

if TYPE_CHECKING:
    from ..core.broker import Broker
    from .client import Client


class JobFuture(Protocol):
    """What the watch needs of a job's future (``future.JobFuture`` is one); named here so the
    watch does not import the module that imports it."""

    job_id: str
    job: Any  # the Job this client enqueued, or None (attached by id)
    _record: StatusRecord
    _sending: bool  # this client has not finished sending its job yet

    def done(self) -> bool: ...
    def _apply_status(self, rec: StatusRecord) -> None: ...
    def _apply_result(self, rec: ResultRecord) -> None: ...
    def _apply_failure(self, exc: BaseException) -> None: ...


__all__ = ["JobWatch", "get_watch"]

log = logging.getLogger("naq_nb.client")

# Futures stay registered this long after resolving, so a final status record that
# is dispatched after the result (two subscriptions, two delivery tasks) still lands.
_LINGER = 10.0
# A job whose status says it ended but whose result was not there is looked at again this much
# later (its result may be stored just after the status); still none: the result is gone.
_GONE_AFTER = 1.0
# With no future left for this long, the watch unsubscribes: its two subscriptions hear every status
# and every stored result of the prefix, every other client's jobs included, and an idle notebook
# would be sent all of them for as long as it lived. The next future subscribes again (one round trip).
_IDLE_AFTER = 30.0


class JobWatch:
    """Routes status and result records of one client's connection to its futures."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self._futures: dict[str, list[JobFuture]] = {}
        self._broker: "Broker | None" = None
        self._subs: list[Any] = []
        self._starting: asyncio.Future | None = None
        self._status_prefix = self._result_prefix = "\0"  # set on subscribe
        # Resolved futures still registered, oldest first, with when they go: one timer for all of
        # them (a timer each would put 10,000 handles in the loop's heap for a sweep).
        self._lingering: deque[tuple[float, JobFuture]] = deque()
        self._linger_timer: asyncio.TimerHandle | None = None
        self._checks: set[asyncio.Task] = set()  # look-agains for results not there yet (_gone_check)
        self._idle_timer: asyncio.TimerHandle | None = None  # armed while no future is registered
        self._listening: "Broker | None" = None  # the connection whose reconnects call _refetch

    # --- lifecycle (loop thread) ------------------------------------------------
    async def ensure_started(self) -> "Broker":
        """Subscribe on the client's current connection (again, if it was replaced or left idle)."""
        b = await self.client.broker()
        self._cancel_idle()  # a future is on its way in
        if self._broker is b and self._subs:
            return b
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._subscribe(b))
        await asyncio.shield(self._starting)
        return b

    async def _subscribe(self, b: "Broker") -> None:
        lay = b.layout
        replaced = self._broker is not None
        self._status_prefix = lay.kv_subject(lay.status_bucket, "")
        self._result_prefix = lay.kv_subject(lay.results_bucket, "")
        self._subs = [
            await b.nc.subscribe(lay.kv_subject(lay.status_bucket, ">"), cb=self._on_status),
            await self._subscribe_results(b),
        ]
        await b.nc.flush()  # the server has the interest before anything we publish next
        self._broker = b
        if self._listening is not b:  # (once per connection: an idle watch subscribes on it again)
            self._listening = b
            b.on_reconnect(lambda: self._refetch(b))
        if replaced:  # a new connection: what happened meanwhile was not seen
            pending = [f for futs in self._futures.values() for f in futs if not f.done()]
            await self._fetch(b, pending)

    async def _subscribe_results(self, b: "Broker") -> Any:
        """An ordered consumer of stored results (see the module docstring), from now on."""
        lay = b.layout
        sub = await b.js.subscribe(
            lay.kv_subject(lay.results_bucket, ">"),
            cb=self._on_result,
            stream=lay.kv_stream(lay.results_bucket),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            inactive_threshold=300.0,
        )
        b.on_close(sub.unsubscribe)  # its flow-control task must end with the connection
        return sub

    async def _refetch(self, b: "Broker") -> None:
        """After a reconnect: records put while we were away never reach the subscriptions. The
        results consumer may have gone with the server (killed, restarted): nats-py notices only
        after two missed heartbeats (10-20 s, every future waiting that long after its job ended),
        so a new one replaces it first; the reads then cover what was stored before it."""
        if self._broker is not b:
            return
        try:
            await b.ensure_layout()  # a server back without its store: its buckets are made again first
        except (NaqConnectionError, nats.errors.Error, asyncio.TimeoutError) as exc:  # (the reads below say more)
            log.debug("watch: checking the layout after a reconnect: %s", exc)
        if len(self._subs) == 2:
            await self._renew_results(b, self._subs[1])
        pending = [f for futs in self._futures.values() for f in futs if not f.done()]
        await self._fetch(b, pending, after_loss=True)

    async def _renew_results(self, b: "Broker", old: Any) -> None:
        """Replace the results consumer ``old`` by a new one (see :meth:`_refetch`), then drop the
        one not wanted: ``old``, or the new one if the watch went idle or ended meanwhile (it
        would hear every result of the prefix, for nobody)."""
        try:
            new = await self._subscribe_results(b)
        except Exception as exc:  # (its stream lost too, say): nats-py's own reset stays the way back
            log.debug("watch: renewing the results consumer after a reconnect: %r", exc)
            return
        drop = new
        if len(self._subs) == 2 and self._subs[1] is old:
            self._subs[1], drop = new, old
        b.off_close(drop.unsubscribe)
        await self._drop([drop])  # (an error: gone with the old server, nothing to undo)

    def _was_stored(self, f: JobFuture) -> bool:
        """Whether the server had ``f``'s job: it sent a record of it, or this client's store of it
        was acknowledged with its status record (a schedule's record is not on the server yet)."""
        if f._record.get("updated_at", 0) > 0:
            return True
        if f.job is None or f._sending or f._record.get("status") == JobStatus.SCHEDULED.value:
            return False  # (a job still being sent, e.g. waiting for this very reconnect, is not lost)
        stores = self.client._stores
        try:
            return stores.check(f.job_id) is None and stores.unrecorded_seq(f.job_id) is None
        except JobNotStoredError:  # (its own handle fails with that)
            return False

    def end(self) -> None:
        """The client closed its connections: no record reaches these futures any more. Each one
        still pending fails, saying so, rather than waiting for ever (``nq.local()``'s stop closes
        its client too); its job goes on, and a later call of the client subscribes afresh."""
        futures, self._futures = self._futures, {}
        self._subs, self._broker, self._listening = [], None, None  # gone with the connection
        self._cancel_idle()
        self._lingering.clear()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        gone = self.client.gone_note  # the server's store went with the close: nothing goes on
        for f in {id(f): f for futs in futures.values() for f in futs}.values():
            if not f.done():
                after = gone or f"the job goes on: JobFuture.attach({f.job_id!r}) on an open client follows it"
                f._apply_failure(NaqConnectionError(f"the client was closed before job {f.job_id} ended; {after}"))

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for s in subs:
            try:
                await s.unsubscribe()
            except nats.errors.Error as exc:  # closed or draining connection: the subscription is gone anyway
                log.debug("watch: unsubscribing: %s", exc)

    # --- registration (loop thread) ---------------------------------------------
    async def register(self, futures: Iterable[JobFuture], fetch: bool = True) -> None:
        """Route records to ``futures``; with ``fetch``, read each job's current state once. A
        connection that is down is waited for as in the client's reads, and named if it stays so."""
        futs = list(futures)
        try:
            if fetch:
                await self.client._reachable(await self.client.broker(), None, _reading(futs))
            b = await self.ensure_started()
            for f in futs:
                self._futures.setdefault(f.job_id, []).append(f)
            if fetch:
                await self._fetch(b, futs)
        except BaseException as exc:
            for f in futs:  # the caller gets no future to follow
                self.unregister(f)
            if isinstance(exc, nats.errors.TimeoutError):
                raise self.client._no_answer(_reading(futs)) from exc
            raise

    def unregister(self, fut: JobFuture) -> None:
        lst = self._futures.get(fut.job_id)
        if lst is None:
            return
        try:
            lst.remove(fut)
        except ValueError:
            pass
        if not lst:
            del self._futures[fut.job_id]
            if not self._futures and self._subs:
                call_soon(self._arm_idle)  # (at once on the loop thread, where this is called)

    def _arm_idle(self) -> None:
        if self._idle_timer is None and not self._futures and self._subs:
            self._idle_timer = asyncio.get_running_loop().call_later(_IDLE_AFTER, self._go_idle)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _go_idle(self) -> None:
        """No future for :data:`_IDLE_AFTER`: drop both subscriptions (see there why)."""
        self._idle_timer = None
        if self._futures or not self._subs or (self._starting is not None and not self._starting.done()):
            return
        subs, self._subs = self._subs, []  # cleared first: a register meanwhile subscribes anew
        if self._broker is not None and len(subs) == 2:
            self._broker.off_close(subs[1].unsubscribe)
        self._spawn(self._drop(subs))

    @staticmethod
    async def _drop(subs: list[Any]) -> None:
        for s in subs:
            try:
                await s.unsubscribe()
            except nats.errors.Error as exc:  # a connection closed meanwhile: gone anyway
                log.debug("watch: dropping a subscription: %s", exc)

    @property
    def registered(self) -> int:
        """How many futures currently receive records (done ones linger briefly)."""
        return sum(len(v) for v in self._futures.values())

    async def _fetch(self, b: "Broker", futs: Sequence[JobFuture], after_loss: bool = False) -> None:
        """Each job's current status and result, read in bulk (a sweep's 10,000 jobs in about 20 requests).
        ``after_loss``: after a reconnect, a job the server had and no longer has (neither record:
        it came back without its store, or they were deleted) will never end; its future fails."""
        if not futs:
            return
        ids = [f.job_id for f in futs]
        statuses, results = await asyncio.gather(  # independent reads: their round trips overlap
            read_keys(b, b.layout.status_bucket, ids), read_keys(b, b.layout.results_bucket, ids)
        )
        for f in futs:
            raw, ended = statuses.get(f.job_id), None
            if raw:
                try:
                    st = decode_status(raw)
                    f._apply_status(st)
                    ended = st.get("status") if st.get("status") in TERMINAL_VALUES else None
                except Exception as exc:  # a malformed or forged record must not stop the others
                    log.debug("status fetch for %s failed: %s", f.job_id, exc)
            data = results.get(f.job_id)
            rec = self._readable(f.job_id, data) if data else None
            if rec is not None and not rec.expired:
                self._resolve(f, await payloads.load_result(b, rec))
            elif ended:  # its result may be stored just after its status, or be gone: look again soon
                self._spawn(self._gone_check(b, f, ended))
            elif after_loss and not raw and data is None and self._was_stored(f):
                f._apply_failure(
                    JobNotFoundError(
                        f"job {f.job_id}: the server no longer has it (no status record, no result): it came "
                        "back without its store, or its records were deleted; it will not run (enqueue it again)"
                    )
                )

    def _readable(self, job_id: str, data: bytes) -> ResultRecord:
        """A stored result; one that can't be read stands (a result is written once): the future fails
        naming it, rather than waiting for ever for a result that will not come."""
        try:
            return decode_result(self.client.settings, job_id, data)  # checks the seal before any unpickling
        except SerializationError as exc:
            log.warning("undecodable result record for job %s: %s", job_id, exc)
            return ResultRecord.refusal(SerializationError(f"the stored result of job {job_id} is unreadable: {exc}"))

    async def _gone_check(self, b: "Broker", f: JobFuture, status: str) -> None:
        await asyncio.sleep(_GONE_AFTER)
        if f.done():
            return
        data = (await read_keys(b, b.layout.results_bucket, [f.job_id])).get(f.job_id)
        rec = self._readable(f.job_id, data) if data else None
        if rec is None or rec.expired:
            rec = ResultRecord.refusal(result_gone_error(f.job_id, status))
        self._resolve(f, await payloads.load_result(b, rec))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._checks.add(task)
        task.add_done_callback(self._check_done)

    def _check_done(self, task: asyncio.Task) -> None:
        self._checks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # (a reconnect refetches anyway)
            log.debug("watch: a result check failed: %r", task.exception())

    # --- dispatch (loop thread) -------------------------------------------------
    @staticmethod
    def _key(subject: str, prefix: str) -> str | None:
        """The exact KV key of a record's subject (never just its last token)."""
        return subject[len(prefix) :] if subject.startswith(prefix) else None

    async def _on_status(self, msg: Any) -> None:
        key = self._key(msg.subject, self._status_prefix)
        futs = self._futures.get(key) if key else None
        if not futs or not msg.data:
            return
        try:
            rec = decode_status(msg.data)
        except SerializationError as exc:  # one malformed record must not stop the others
            log.debug("undecodable status record for %s: %s", key, exc)
            return
        for f in list(futs):
            f._apply_status(rec)

    async def _on_result(self, msg: Any) -> None:
        job_id = self._key(msg.subject, self._result_prefix)
        futs = self._futures.get(job_id) if job_id else None
        if job_id is None or not futs:
            return
        if (msg.headers or {}).get(KV_OP) in (KV_DEL, KV_PURGE) or not msg.data:
            return  # a requeue cleared an old result; the new one follows
        rec = self._readable(job_id, msg.data)
        rec = await payloads.load_result(self._broker or await self.ensure_started(), rec)  # over max_payload
        for f in list(futs):
            self._resolve(f, rec)

    def _resolve(self, f: JobFuture, rec: ResultRecord) -> None:
        if f.done():
            return
        f._apply_result(rec)
        loop = asyncio.get_running_loop()
        self._lingering.append((loop.time() + _LINGER, f))
        if self._linger_timer is None:
            self._linger_timer = loop.call_later(_LINGER, self._end_lingering)

    def _end_lingering(self) -> None:
        """Unregister the futures whose linger is over; wake again for the next one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._lingering and self._lingering[0][0] <= now:
            self.unregister(self._lingering.popleft()[1])
        self._linger_timer = loop.call_at(self._lingering[0][0], self._end_lingering) if self._lingering else None


def _reading(futs: Sequence[JobFuture]) -> str:
    more = f" and {len(futs) - 1} more" if len(futs) > 1 else ""
    return f"reading the state of job {futs[0].job_id if futs else '?'}{more}"


# Every watch alive (for a fork). A watch is kept by its client (``Client.watch``), not by a map keyed by
# the client: the watch holds its client, so such an entry never went, and every client that had a
# future stayed in memory for good with its closed connection (each ``nq.local()`` restart, say).
_watches: "weakref.WeakSet[JobWatch]" = weakref.WeakSet()
_watches_lock = threading.Lock()


def get_watch(client: "Client") -> JobWatch:
    """The :class:`JobWatch` shared by every future of ``client`` (created on first use)."""
    with _watches_lock:
        w = client.watch
        if w is None:
            w = client.watch = JobWatch(client)
            _watches.add(w)
            client.on_close(w.end)
        return w


async def register(client: "Client", futures: Iterable[JobFuture], fetch: bool = True) -> None:
    """Register futures with their client's watch, from any event loop."""
    await run_async(get_watch(client).register(futures, fetch))


register_sync = blocking(register)


# --- after a fork ------------------------------------------------------------------------------
#: In a forked child: watches that kept pending futures but none of the parent's subscriptions.
_orphaned: list[JobWatch] = []


def _after_fork_in_child() -> None:
    """The child has none of the parent's connection, loop thread or timers: each watch keeps its
    futures and forgets the rest, and the first wait there subscribes again. Without it a future
    inherited by a ``multiprocessing`` child sat at its last record ("queued") for ever."""
    global _watches_lock
    _watches_lock = threading.Lock()  # (another thread may have held it at the fork)
    _orphaned.clear()
    for w in list(_watches):
        w._subs, w._broker, w._starting, w._checks, w._linger_timer = [], None, None, set(), None
        w._idle_timer, w._listening = None, None
        w._lingering.clear()
        if w._futures:
            _orphaned.append(w)


os.register_at_fork(after_in_child=_after_fork_in_child)


async def _revive() -> None:
    while _orphaned:
        w = _orphaned.pop()
        try:
            b = await w.ensure_started()
            await w._fetch(b, [f for futs in w._futures.values() for f in futs if not f.done()])
        except BaseException:
            _orphaned.append(w)  # the next wait tries again; this one hears why
            raise


def _refollow() -> None:
    """Before a blocking wait on futures: in a forked child, subscribe the inherited watches again
    (elsewhere one flag check)."""
    if _orphaned:
        run_sync(_revive())


async def _refollow_awaited() -> None:
    """:func:`_refollow` for an awaiting caller."""
    if _orphaned:
        await run_async(_revive())
