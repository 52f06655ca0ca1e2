"""Taking one delivered job message to its end: decode, run, record, acknowledge.

The result is written with create-if-absent semantics before the message is
acknowledged, so a job redelivered after a worker died (or whose ack was lost)
never records a second result. Retries go back to JetStream with a delayed
``nak``; a job out of retries is copied to the failed stream with its
traceback, attempts and worker id before it is acknowledged.

Every delivery is counted. A redelivered job whose last status is still
``running`` lost its previous run (its worker died mid-job, or the job killed
it); such lost runs are counted in the status record (``lost``), and a job
that lost more runs than its retry budget plus :data:`LOST_RUN_GRACE` (or was
delivered absurdly often, :data:`DELIVERY_SLACK`) is dead-lettered instead
of being run again, so a job that kills its worker can't do so forever.

The runner gets only what it uses: broker, worker id, an execution (threads or
processes), the stats counter and callbacks; it knows nothing of the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Container

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from . import blobs, payloads
from .broker import Broker
from .context import JobContext, end_job_output
from .deadletter import DeadLetters
from .delivery import STORED_NAK_DELAY, Delivery, nak, parse_meta
from .deps import release_dependents
from .envelope import meta_record_fields
from .errors import (
    JS_STORE_REFUSED,
    BlobError,
    DependencyFailedError,
    JobLostError,
    NaqConnectionError,
    NaqException,
    SerializationError,
    SignatureError,
)
from .execution import JobCall, SerializedValue, failure_parts
from .job import JobStatus
from .records import encode_failure, encode_result
from .registry import decode_heartbeat
from .status import (
    StatusRecord,
    decode_status,
    encode_status,
    status_record,
    trusted_fields,
    with_status,
)
from .final_writes import SentWrites, existing_result, send_final_writes, settle_final_writes, write_status
from .results import early_target, push_result
from .serialization import seal_record
from .tracebacks import bounded_failure_text, error_line

__all__ = ["JobRunner", "JobLostError", "Delivery", "parse_meta", "LOST_RUN_GRACE", "DELIVERY_SLACK", "RUNNING_AFTER"]

log = logging.getLogger("naq_nb.worker")

LOST_RUN_GRACE = 1  # lost runs forgiven beyond the retry budget (an innocent job survives a worker kill)
DELIVERY_SLACK = 20  # deliveries beyond the budget that end a job whatever its records say
RESULT_WRITE_TRIES = 3  # a result write is tried this often (each bounded), then the job is handed back
# What makes one try of the final writes fail (it is tried again, then the job handed back).
_WRITE_ERRORS = (asyncio.TimeoutError, nats.errors.Error, OSError, NaqConnectionError)
RESULT_WRITE_TIMEOUT = 5.0  # each try's bound, or NAQ_PUBLISH_TIMEOUT if that is shorter
RUNNING_AFTER = 0.2  # a first run in a child process is recorded "running" once it lasts this long
WORKER_ERROR_TRIES = 5  # deliveries a job may meet a worker error on (backing off) before it ends failed
WORKER_ERROR_MAX_DELAY = 60.0  # the longest wait before such a job is tried again


class JobRunner:
    """Runs deliveries: ``run(d)`` takes one to its end; the worker owns slots and messages."""

    def __init__(
        self,
        broker: Broker,
        worker_id: str,
        execution: Any,
        stats: Any,
        *,
        complete: Callable[[Awaitable[Any]], Awaitable[None]],
        cancelled: Container[str] = (),
        on_line: Callable[[str, str], None] | None = None,
        live_after: float = 15.0,
        alone: Callable[[Delivery], bool] = lambda d: False,
    ) -> None:
        self.b = broker
        self.lay = broker.layout
        self.worker_id = worker_id
        self.execution = execution
        self.stats = stats
        self.dead = DeadLetters(broker, worker_id, stats)
        self.complete = complete
        self.cancelled = cancelled
        self.on_line = on_line
        self.live_after = live_after  # a worker whose heartbeat is younger than this is alive
        # alone(d): d was this worker's only job from its start: its client is told early (see _commit).
        self.alone = alone
        # The worker's DependencyGate: tells which finished jobs may have parked dependents.
        # None: look for dependents after every job.
        self.dependents: Any = None

    # --- entry -----------------------------------------------------------
    async def run(self, d: Delivery) -> None:
        """Run ``d`` to completion; finalization continues in the background."""
        meta = d.meta
        assert meta is not None
        if meta.job_id in self.cancelled:
            await self.finish_cancelled(d)
            return
        # With signing on, a first delivery is checked too: a signed message replayed after the
        # de-duplication window must not run a job that already has a result.
        if (d.delivered > 1 or d.suspect or self.b.settings.signing_key) and await self._already_ended(d):
            return
        if self.b.settings.signing_key and d.is_a_copy():
            await self._reject_copy(d)
            return
        if (d.delivered > 1 or d.suspect) and (await self._run_elsewhere(d) or await self._over_budget(d)):
            return
        try:
            body = await payloads.open_body(self.b, d.msg.data, f"job {meta.job_id}")  # an offloaded body: fetched
            call = JobCall(meta, d.msg.headers, body, self.b.serializer, self.b.settings.signing_keys)
            self.execution.prepare(call)
            if blobs.refers_to_objects(body):  # nq.put values: fetched here, unpickled where the call runs
                await call.fetch_objects(self.b, here=not getattr(self.execution, "isolated", False))
        except SignatureError as exc:
            # Unverified, so the job id in its header is not the job's: dead-lettered, and nothing is
            # written under that id (an unsigned message naming a waiting job must not fail it).
            await self.dead.reject(d.msg, meta.queue, str(exc))
            return
        except SerializationError as exc:
            await self._finish_failed(d, exc, retry=False, reason=f"payload cannot be decoded: {exc}")
            return
        if not await self._begin(d):
            return
        try:
            value = await self._call(d, call)
        except asyncio.CancelledError:
            if not d.cancelled or _uncancel():
                raise  # the worker is stopping; the caller hands the message back
            await self.finish_cancelled(d)
            return
        except SerializationError as exc:
            if call.decoded is None:  # the child could not unpickle the body
                await self._finish_failed(d, exc, retry=False, reason=f"payload cannot be decoded: {exc}")
            else:
                await self._finish_failed(d, exc)
            return
        except Exception as exc:
            await self._finish_failed(d, exc)
            return
        if d.cancelled:  # job code swallowed the cancel
            if _uncancel():
                raise asyncio.CancelledError  # the worker is stopping too
            await self.finish_cancelled(d)
            return
        await self._finish_ok(d, value)

    async def _begin(self, d: Delivery) -> bool:
        """The run's start: its "running" record (written, deferred or timed) and its context. False
        when, with signing on, another message of the job claimed its record first: this one never runs."""
        meta = d.meta
        d.started = time.time()
        d.record = self._record(d, JobStatus.RUNNING, started_at=d.started)
        if self.b.settings.signing_key and not await self._claim(d):
            return False
        loop = asyncio.get_running_loop()
        d.ctx = JobContext(meta.job_id, meta.queue, d.delivered, loop, self._flush_progress, on_line=self.on_line)
        d.ctx.record = d.record
        if d.running_written:
            pass  # claimed
        elif d.delivered > 1:
            # Confirmed: if this run kills the worker, the next one knows.
            await write_status(self.b, meta.job_id, d.record)
            d.running_written = True
        elif getattr(self.execution, "isolated", False):
            # Sync code in a child process can't take the worker down, so a job that ends within
            # RUNNING_AFTER needs no "running" record: a reader sees queued -> succeeded. The record
            # is written if it runs longer, or at once if it turns out to run on the loop (async).
            d.running_timer = loop.call_later(RUNNING_AFTER, lambda: asyncio.ensure_future(self._running_late(d)))
        else:
            await self._status_nowait(meta.job_id, d.record)
            d.running_written = True
        return True

    async def _claim(self, d: Delivery) -> bool:
        """With signing on, the "running" record is written over exactly the record this delivery read
        (revision-checked), so of two messages of one job (a signed one replayed under a new message
        id, past the de-duplication) one runs. The other finds the record moved: a copy is
        dead-lettered; anything else (a cancel, say) is handed back, to be read again."""
        kv = await self.b.kv(self.lay.status_bucket)
        try:
            if d.prev_rev is None:
                await kv.create(d.meta.job_id, encode_status(d.record))
            else:
                await kv.update(d.meta.job_id, encode_status(d.record), last=d.prev_rev)
        except KeyWrongLastSequenceError:
            await self._read_prev(d)
            if d.is_a_copy():
                await self._reject_copy(d)
            else:
                await nak(d.msg, STORED_NAK_DELAY)
            return False
        d.running_written = True
        return True

    async def _reject_copy(self, d: Delivery) -> None:
        ran = (d.prev or {}).get("seq")
        await self.dead.reject(d.msg, d.meta.queue, f"a copy of job {d.meta.job_id}, whose message {ran} ran")

    async def _call(self, d: Delivery, call: JobCall) -> Any:
        """Run the call in this (the slot's) task: a task of its own would cost a task and two loop
        iterations per job. ``d.task`` is this task while the call runs, so a cancel notice or a
        forced stop cancels the call and nothing around it."""
        assert d.ctx is not None  # made by _begin
        d.task = asyncio.current_task()
        try:
            return await self.execution.run(call, d.ctx, d.meta.options.timeout, on_loop=lambda: self._running_late(d))
        finally:
            d.task = None  # set and cleared with no await in between: a cancel can only land in the call
            d.ended = True  # the final status is written next; a late "running" or progress must not overtake it
            if d.running_timer is not None:
                d.running_timer.cancel()
            d.ctx.close()  # first: output the job's thread writes from now on is not kept for it
            end_job_output(d.ctx)  # a last line printed without a newline (threads mode) is logged too

    def _record(self, d: Delivery, status: JobStatus, **extra: Any) -> StatusRecord:
        m = d.meta
        prev = d.prev or {}
        rec = status_record(
            m.job_id,
            m.queue,
            status,
            **meta_record_fields(m),
            attempts=d.delivered,
            failures=prev.get("failures", 0),
            lost=prev.get("lost", 0),
            worker=self.worker_id,
            seq=d.seq,
        )
        # Merged over the head in this order (a later source wins). rt: a cancel pushes its result
        # to the client that enqueued the job.
        more: dict[str, Any] = {"rt": m.reply} if m.reply else {}
        if "due" in m.raw:  # fired by the scheduler: keep when it was due and which schedule fired it
            more.update(due_at=m.raw["due"], schedule_id=m.raw.get("sched"))
        if d.record:
            more.update({k: v for k, v in d.record.items() if k in ("started_at", "progress", "total", "message")})
        if d.ctx is not None and status.is_terminal:
            more.update({k: v for k, v in d.ctx.snapshot(self.b.max_payload).items() if v is not None})
        more.update(extra)
        return with_status(rec, status, **more)

    async def _already_ended(self, d: Delivery) -> bool:
        """On a redelivery: learn failures and lost runs, and skip jobs that already have a result."""
        await self._read_prev(d)
        existing = await existing_result(self.b, d.meta.job_id)
        if existing is None:
            return False
        # The job ended before (its worker died before acking, or it was cancelled).
        if (d.prev or {}).get("status") != existing.status:  # else the record already tells the end
            rec = self._record(
                d,
                JobStatus(existing.status),
                finished_at=existing.meta.get("finished_at"),
                error=existing.meta.get("error"),
            )
            await write_status(self.b, d.meta.job_id, rec)
        if d.meta.reply:  # its push may have been lost with the run that stored it
            await push_result(self.b, d.meta.reply, d.meta.job_id)
        await d.msg.ack()
        return True

    async def _read_prev(self, d: Delivery) -> None:
        """The job's status record as found (its trusted fields) and its revision, into ``d``."""
        kv = await self.b.kv(self.lay.status_bucket)
        try:
            entry = await kv.get(d.meta.job_id)
            d.prev_rev = entry.revision
            d.prev, bad = trusted_fields(decode_status(entry.value or b""))
            if bad:
                log.warning("job %s: its status record has damaged fields (%s); read as missing", d.meta.job_id, bad)
        except KeyNotFoundError:
            d.prev = d.prev_rev = None
        except SerializationError:
            d.prev = None

    async def _run_elsewhere(self, d: Delivery) -> bool:
        """Another delivery of this message runs on a live worker (or started after ours): leave it
        to that one. Our copy is neither acked nor naked; the live run's acks settle the message.
        Otherwise a previous run that never reported an outcome is counted as lost."""
        prev = d.prev
        if prev is None or prev.get("seq") != d.seq:
            return False  # no record of this message (a requeue is a new message)
        if prev.get("attempts", 0) > d.delivered:
            log.warning(
                "job %s: dropping a stale delivery (%d; delivery %s started it)",
                d.meta.job_id,
                d.delivered,
                prev.get("attempts"),
            )
            return True
        if prev.get("status") != JobStatus.RUNNING.value or self._delivered_too_often(d):
            return False
        other = prev.get("worker")
        if other and other != self.worker_id and await self._alive(other):
            log.warning("job %s: redelivered while running on live worker %s; leaving it there", d.meta.job_id, other)
            return True
        prev["lost"] = prev.get("lost", 0) + 1  # that run never reported an outcome
        return False

    def _delivered_too_often(self, d: Delivery) -> bool:
        return d.delivered > d.meta.retry.max_retries + 1 + LOST_RUN_GRACE + DELIVERY_SLACK

    async def _alive(self, worker_id: str) -> bool:
        kv = await self.b.kv(self.lay.workers_bucket)
        try:
            rec = decode_heartbeat((await kv.get(worker_id)).value)  # a heartbeat, not a status
        except KeyNotFoundError:
            return False
        return rec is not None and rec["heartbeat_age"] < self.live_after  # (decode_heartbeat adds it)

    async def _over_budget(self, d: Delivery) -> bool:
        """Dead-letter a job that lost too many runs (or was delivered too often) instead of running it."""
        prev = d.prev or {}
        lost, budget = prev.get("lost", 0), d.meta.retry.max_retries
        if lost > budget + LOST_RUN_GRACE:
            reason = (
                f"job lost {lost} runs (its worker process died while running it each time, last on "
                f"{prev.get('worker', '?')}); it is not run again"
            )
        elif self._delivered_too_often(d):
            reason = f"job was delivered {d.delivered} times without an outcome; it is not run again"
        else:
            return False
        log.error("job %s: %s", d.meta.job_id, reason)
        history = {
            "lost": lost,
            "last_worker": prev.get("worker"),
            "last_status": prev.get("status"),
            "last_error": prev.get("error"),
        }
        await self._finish_failed(d, JobLostError(reason), retry=False, reason=reason, history=history)
        return True

    async def hand_back(self, d: Delivery) -> None:
        """A running job interrupted by the worker's stop goes back to the queue, not counted as lost."""
        if d.record:
            # No round trip: the worker is stopping and may cancel this any moment. On one
            # connection the status is stored before the nak makes the job visible again.
            rec = self._record(d, JobStatus.QUEUED, handed_back_at=time.time())
            try:
                await self._status_nowait(d.meta.job_id, rec)
            except nats.errors.Error as exc:  # at worst the next run counts this one as lost
                log.warning("job %s: cannot record the hand-back: %s", d.meta.job_id, exc)
        try:
            await nak(d.msg)
        except nats.errors.Error as exc:  # disconnected: the message comes back after ack_wait anyway
            log.warning("job %s: cannot hand it back now (%s); it returns after ack_wait", d.meta.job_id, exc)

    async def after_worker_error(self, d: Delivery, exc: Exception) -> None:
        """Something outside the job's code failed (a bug, a record nobody expected): the job is tried
        again later, backing off, and after :data:`WORKER_ERROR_TRIES` deliveries it ends failed,
        naming the error. Never handed straight back: that would loop as fast as it fails."""
        jid = d.meta.job_id
        prev = d.prev or {}
        # Deliveries the job's own failures (retries) and lost runs explain are not the worker's errors:
        # a job on its sixth retry that meets one worker error backs off like any other.
        errors = d.delivered - prev.get("failures", 0) - prev.get("lost", 0)
        if errors >= WORKER_ERROR_TRIES:
            reason = f"the worker failed handling it {errors} times; last: {error_line(exc)}"
            try:
                await self._finish_failed(d, NaqException(reason), retry=False, reason=reason)
                return
            except Exception as again:  # the failure path is broken too: wait the longest, then again
                log.error("job %s: cannot record its failure either (%r)", jid, again)
        delay = min(WORKER_ERROR_MAX_DELAY, 2.0 ** (max(errors, 1) - 1))
        if d.record and not d.final_sent:  # recorded running: say why not, or the next delivery counts a lost run
            why = f"worker error: {error_line(exc)}"
            rec = self._record(d, JobStatus.RETRYING, error=why, retry_at=time.time() + delay)
            try:
                await self._status_nowait(jid, rec)
            except nats.errors.Error as rec_exc:  # at worst the next run counts this one as lost
                log.warning("job %s: cannot record the worker error: %s", jid, rec_exc)
        try:
            await nak(d.msg, delay)
        except nats.errors.Error as nak_exc:  # disconnected: it comes back after ack_wait anyway
            log.warning("job %s: cannot hand it back now (%s); it returns after ack_wait", jid, nak_exc)

    # --- outcomes --------------------------------------------------------
    async def _finish_ok(self, d: Delivery, value: Any) -> None:
        m = d.meta
        ttl = m.options.result_ttl
        payload = value.payload if isinstance(value, SerializedValue) else None  # from a child: ready to store
        try:
            data = encode_result(
                self.b.serializer,
                value,
                result_ttl=ttl,
                payload=payload,
                worker=self.worker_id,
                attempts=d.delivered,
                started_at=d.started,
            )
            data = await payloads.offload_result(self.b, data, m.job_id, tries=RESULT_WRITE_TRIES)
        except SerializationError as exc:
            await self._finish_failed(d, exc)
            return
        except NaqConnectionError as exc:  # the work is done: like a result write that failed (_settle)
            await self._write_failed(d, RESULT_WRITE_TRIES, exc)
            return
        rec = self._record(d, JobStatus.SUCCEEDED, finished_at=time.time())
        await self._commit(d, data, rec)

    async def _finish_failed(
        self,
        d: Delivery,
        exc: BaseException,
        *,
        retry: bool = True,
        reason: str | None = None,
        history: dict | None = None,
    ) -> None:
        m = d.meta
        failures = (d.prev or {}).get("failures", 0) + 1
        exc, error, tb, types = failure_parts(exc)
        error, tb = bounded_failure_text(error, tb, self.b.max_payload)
        reason = None if reason is None else bounded_failure_text(reason, "", self.b.max_payload)[0]
        if retry and m.retry.should_retry(failures, types):
            delay = m.retry.delay_for(failures)
            rec = self._record(
                d, JobStatus.RETRYING, failures=failures, error=error, traceback=tb, retry_at=time.time() + delay
            )
            await write_status(self.b, m.job_id, rec)
            await nak(d.msg, delay)
            self.stats["retried"] += 1
            return
        data = encode_failure(
            self.b.serializer,
            exc,
            error=error,
            tb=tb,
            result_ttl=m.options.result_ttl,
            worker=self.worker_id,
            attempts=d.delivered,
            failures=failures,
            dependency=getattr(exc, "dependency", None),
        )
        data = await payloads.offload_result(self.b, data, m.job_id)
        finished = time.time()
        failed_seq = await self.dead.copy(
            d.msg,
            m.queue,
            reason=reason or error,
            traceback=tb,
            attempts=d.delivered,
            failures=failures,
            exc_type=types[0] if types else "",
            **(history or {}),
        )
        fields = dict(failures=failures, error=error, traceback=tb, finished_at=finished, failed_seq=failed_seq)
        rec = self._record(d, JobStatus.FAILED, **fields)
        self.stats["failed"] += 1
        await self._commit(d, data, rec)

    async def finish_cancelled(self, d: Delivery) -> None:
        data = encode_failure(None, None, status=JobStatus.CANCELLED, error=f"job {d.meta.job_id} was cancelled")
        rec = self._record(d, JobStatus.CANCELLED, finished_at=time.time())
        await self._commit(d, data, rec)

    async def fail_dependency(self, d: Delivery, dep_id: str, dep_status: str) -> None:
        exc = DependencyFailedError(f"job {d.meta.job_id} depends on job {dep_id}, which {dep_status}")
        exc.dependency = dep_id  # type: ignore[attr-defined]
        await self._finish_failed(d, exc, retry=False)

    # --- writes ----------------------------------------------------------
    async def _commit(self, d: Delivery, result: bytes, rec: StatusRecord) -> None:
        """Status and result (create-only) together, both acknowledged, then the push and the ack.

        The two writes go to different streams, which the server may store in
        either order, so both acknowledgements are awaited (concurrently: one round
        trip) before the result is pushed to its client or the message acked: a
        reader woken by the push reads the final status too. The message is acked
        only once the result is stored. A result write is tried :data:`RESULT_WRITE_TRIES` times,
        each bounded; then the message is handed back (nak) for a later delivery,
        which finds the result if a write did land after all.

        A worker with no other job in hand pushes the result as the writes go out, and
        their acknowledgements go to the client too: it hands the result out once both
        come, a hop sooner than a push sent after them. A busy worker pushes afterwards,
        which spares the server and the client two messages a job.

        The first try's writes are sent here, in the slot, so they leave with the loop's next
        write (a lone job's within the call: its client waits on them); what waits for them
        (acknowledgements, the ack, tries again) goes on in the background while the slot takes
        its next job.
        """
        jid = d.meta.job_id
        result = seal_record(result, jid, self.b.settings.signing_key)  # bound to this job id
        bound = min(RESULT_WRITE_TIMEOUT, self.b.publish_timeout)
        early = early_target(d.meta.reply, result) if self.b.ack_copies and self.alone(d) else None
        sent: SentWrites | Exception
        d.final_sent = True
        try:
            sent = await send_final_writes(self.b, jid, result, rec, bound, early)
        except _WRITE_ERRORS as exc:  # the first try failed: the background tries again
            sent = exc
        await self.complete(self._settle(d, result, rec, bound, early, sent))

    async def _settle(
        self,
        d: Delivery,
        result: bytes,
        rec: StatusRecord,
        bound: float,
        early: tuple[str, str] | None,
        sent: SentWrites | Exception,
    ) -> None:
        """The rest of :meth:`_commit`: acknowledgements (tries again as needed), push, ack, dependents."""
        jid = d.meta.job_id
        for attempt in range(1, RESULT_WRITE_TRIES + 1):
            try:
                if attempt > 1:
                    sent = await send_final_writes(self.b, jid, result, rec, bound, early)
                if isinstance(sent, Exception):
                    raise sent
                stood, told = await settle_final_writes(self.b, jid, result, rec, bound, sent)
                break
            except _WRITE_ERRORS as exc:
                if getattr(exc, "err_code", None) in JS_STORE_REFUSED and rec["status"] == JobStatus.SUCCEEDED.value:
                    # No outage to wait out: its failure (small) is stored instead, naming the refusal.
                    await self._finish_failed(d, BlobError(f"its result ({len(result):,} bytes) was refused: {exc}"))
                    return
                if attempt < RESULT_WRITE_TRIES:
                    log.warning("job %s: result write failed (%s: %s); trying again", jid, type(exc).__name__, exc)
                    await asyncio.sleep(0.5 * attempt)
                    continue
                await self._write_failed(d, attempt, exc, f", each within {bound:g}s")
                return
        if d.meta.reply and not told:  # an earlier result stands (a cancel, another run): "read it"
            await push_result(self.b, d.meta.reply, jid, result if stood else b"")
        await d.msg.ack()
        self.stats["processed"] += 1
        await payloads.job_ended(self.b, d.msg.data, rec["status"])  # its offloaded body is no longer needed
        if self.dependents is None or self.dependents.may_have_dependents(jid):
            await release_dependents(self.b, jid)  # jobs parked on this one run, re-park or fail now
            if self.dependents is not None:
                self.dependents.released(jid)

    async def _write_failed(self, d: Delivery, tries: int, exc: BaseException, within: str = "") -> None:
        """The result could not be stored in ``tries`` tries: the job is handed back, to run again."""
        bound = min(RESULT_WRITE_TIMEOUT, self.b.publish_timeout)
        why = f"{tries} times{within} ({type(exc).__name__}: {exc})"
        log.error("job %s: result write failed %s; handing the job back", d.meta.job_id, why)
        self.stats["result_write_failed"] += 1
        try:
            # Recorded as handed back (not "running" here), so the next delivery runs it at once.
            await asyncio.wait_for(self.hand_back(d), bound)
        except asyncio.TimeoutError as nak_exc:
            # The connection is down: the message times out (ack_wait) and comes back anyway.
            log.warning("job %s: nak failed too (%s)", d.meta.job_id, nak_exc)

    async def _status_nowait(self, job_id: str, rec: StatusRecord) -> None:
        # Intermediate states go out without waiting for the ack: the final state is acked.
        await self.b.send(self.lay.kv_subject(self.lay.status_bucket, job_id), encode_status(rec))

    async def _running_late(self, d: Delivery) -> None:
        """The deferred "running" record (once; never after the job ended: its final status may be out)."""
        if d.running_written or d.ended or d.ctx is None:  # (ctx is set before this can be scheduled)
            return
        d.running_written = True
        try:
            await self._status_nowait(d.meta.job_id, d.ctx.record)
        except nats.errors.Error as exc:  # disconnected: the final status still follows
            log.warning("job %s: cannot record it running: %s", d.meta.job_id, exc)

    async def _flush_progress(self, ctx: JobContext) -> None:
        if ctx.record.get("status") != JobStatus.RUNNING.value:
            return
        rec = with_status(ctx.record, JobStatus.RUNNING, **ctx.snapshot(self.b.max_payload))  # a copy
        ctx.record = rec
        await self._status_nowait(ctx.job_id, rec)


def _uncancel() -> bool:
    """Withdraw the cancel notice's request on the slot's task; True if another one is still
    pending (a stop that came at the same time: one CancelledError stands for both)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0 and task.uncancel() > 0
