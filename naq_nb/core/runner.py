"""Taking one delivered job message to its end: decode, run, record, acknowledge.

The result is written with create-if-absent semantics before the message is
acknowledged, so a job redelivered after a worker died (or whose ack was lost)
never records a second result. Retries go back to JetStream with a delayed
``nak``; a job out of retries is copied to the failed stream with its
traceback, attempts and worker id before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js.errors import APIError, KeyNotFoundError

from . import blobs
from .context import JobContext
from .envelope import HEADER_META, JobMeta, decode_call, decode_meta
from .errors import DependencyFailedError, SerializationError
from .execution import call_job
from .job import JobStatus
from .records import user_traceback, decode_status, encode_failure, encode_result, encode_status, exception_type_names
from .results import get_result
from .serialization import pack_record

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["JobRunner", "Delivery", "parse_meta"]

log = logging.getLogger("naq_nb.worker")
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_CREATE_ONLY = {_EXPECTED_LAST: "0"}
_WRONG_LAST_SEQ = 10071


@dataclass
class Delivery:
    """A message in this worker's hands, from arrival to ack/nak."""

    msg: Msg
    meta: JobMeta | None = None
    delivered: int = 1
    prev: dict | None = None
    task: asyncio.Task | None = None
    ctx: JobContext | None = None
    started: float = 0.0
    cancelled: bool = False
    record: dict = field(default_factory=dict)


class JobRunner:
    """Runs deliveries for one :class:`Worker` (which owns slots, executor and broker)."""

    def __init__(self, worker: "Worker") -> None:
        self.w = worker
        self.b = worker.broker
        self.lay = worker.broker.layout

    # --- entry -----------------------------------------------------------
    async def run(self, d: Delivery) -> None:
        """Run ``d`` to completion; finalization continues in the background."""
        meta = d.meta
        assert meta is not None
        if meta.job_id in self.w.cancelled_ids:
            await self._finish_cancelled(d)
            return
        if d.delivered > 1 and await self._already_ended(d):
            return
        try:
            body = await blobs.open_body(self.b, d.msg.data, f"job {meta.job_id}")
            fn, args, kwargs = await blobs.decode_with_objects(self.b, lambda: decode_call(
                meta, d.msg.headers, body, self.b.serializer, self.b.settings.signing_key), f"job {meta.job_id}")
        except SerializationError as exc:
            await self._finish_failed(d, exc, retry=False, reason="payload cannot be decoded")
            return
        d.started = time.time()
        d.record = self._record(d, JobStatus.RUNNING, started_at=d.started)
        await self._status_nowait(meta.job_id, d.record)
        d.ctx = JobContext(meta.job_id, meta.queue, d.delivered, asyncio.get_running_loop(), self._flush_progress)
        d.ctx.record = d.record  # type: ignore[attr-defined]
        d.task = asyncio.ensure_future(call_job(fn, args, kwargs, ctx=d.ctx, executor=self.w.executor,
                                                timeout=meta.options.timeout))
        try:
            try:
                value = await d.task
            finally:
                d.ctx.close()  # the final status is written next; late progress must not overtake it
        except asyncio.CancelledError:
            if not d.cancelled:
                raise  # the worker is stopping; the caller hands the message back
            await self._finish_cancelled(d)
            return
        except Exception as exc:
            await self._finish_failed(d, exc)
            return
        if d.cancelled:
            await self._finish_cancelled(d)
            return
        await self._finish_ok(d, value)

    def _record(self, d: Delivery, status: JobStatus, **extra: Any) -> dict:
        m = d.meta
        prev = d.prev or {}
        rec = {"id": m.job_id, "queue": m.queue, "status": status.value, "func": m.function,
               "name": m.options.name, "enqueued_at": m.enqueued_at, "attempts": d.delivered,
               "failures": prev.get("failures", 0), "worker": self.w.worker_id,
               "depends_on": list(m.options.depends_on), "seq": d.msg.metadata.sequence.stream}
        if "due" in m.raw:  # fired by the scheduler: keep when it was due and which schedule fired it
            rec.update(due_at=m.raw["due"], schedule_id=m.raw.get("sched"))
        if d.record:
            rec.update({k: v for k, v in d.record.items() if k in ("started_at", "progress", "total", "message")})
        if d.ctx is not None and status.is_terminal:
            rec.update({k: v for k, v in d.ctx.snapshot().items() if v is not None})
        rec.update(extra)
        return rec

    async def _already_ended(self, d: Delivery) -> bool:
        """On a redelivery: learn the failure count, and skip jobs that already have a result."""
        kv = await self.b.kv(self.lay.status_bucket)
        try:
            d.prev = decode_status((await kv.get(d.meta.job_id)).value)
        except (KeyNotFoundError, SerializationError):
            d.prev = None
        existing = await get_result(self.b, d.meta.job_id)
        if existing is None:
            return False
        # The job ended before (its worker died before acking, or it was cancelled).
        rec = self._record(d, JobStatus(existing.status), finished_at=existing.meta.get("finished_at"),
                           error=existing.meta.get("error"))
        await self._status(d.meta.job_id, rec)
        await d.msg.ack()
        return True

    # --- outcomes --------------------------------------------------------
    async def _finish_ok(self, d: Delivery, value: Any) -> None:
        m = d.meta
        ttl = m.options.result_ttl
        try:
            data = encode_result(self.b.serializer, value, result_ttl=ttl, worker=self.w.worker_id,
                                 attempts=d.delivered, started_at=d.started)
            data = await blobs.offload_result(self.b, data, m.job_id)  # over max_payload -> object store
        except SerializationError as exc:
            await self._finish_failed(d, exc)
            return
        rec = self._record(d, JobStatus.SUCCEEDED, finished_at=time.time())
        await self.w.complete_in_background(self._commit(d, data, rec))

    async def _finish_failed(self, d: Delivery, exc: BaseException, *, retry: bool = True,
                             reason: str | None = None) -> None:
        m = d.meta
        failures = (d.prev or {}).get("failures", 0) + 1
        tb = user_traceback(exc)
        error = f"{type(exc).__name__}: {exc}"
        if retry and m.retry.should_retry(failures, exception_type_names(exc)):
            delay = m.retry.delay_for(failures)
            rec = self._record(d, JobStatus.RETRYING, failures=failures, error=error, traceback=tb,
                               retry_at=time.time() + delay)
            await self._status(m.job_id, rec)
            await d.msg.nak(delay=delay if delay > 0 else None)
            self.w.stats["retried"] += 1
            return
        data = encode_failure(self.b.serializer, exc, error=error, tb=tb, result_ttl=m.options.result_ttl,
                              worker=self.w.worker_id, attempts=d.delivered, failures=failures,
                              dependency=getattr(exc, "dependency", None))
        data = await blobs.offload_result(self.b, data, m.job_id)
        rec = self._record(d, JobStatus.FAILED, failures=failures, error=error, traceback=tb,
                           finished_at=time.time())
        await self.dead_letter(d.msg, m.queue, reason=reason or error, traceback=tb, attempts=d.delivered,
                               failures=failures, exc_type=exception_type_names(exc)[0])
        self.w.stats["failed"] += 1
        await self.w.complete_in_background(self._commit(d, data, rec))

    async def _finish_cancelled(self, d: Delivery) -> None:
        data = encode_failure(None, None, status=JobStatus.CANCELLED, error=f"job {d.meta.job_id} was cancelled")
        rec = self._record(d, JobStatus.CANCELLED, finished_at=time.time())
        await self.w.complete_in_background(self._commit(d, data, rec))

    async def fail_dependency(self, d: Delivery, dep_id: str, dep_status: str) -> None:
        exc = DependencyFailedError(f"job {d.meta.job_id} depends on job {dep_id}, which {dep_status}")
        exc.dependency = dep_id  # type: ignore[attr-defined]
        await self._finish_failed(d, exc, retry=False)

    # --- writes ----------------------------------------------------------
    async def _write_over_marker(self, jid: str, result: bytes) -> None:
        """The key holds only a delete/purge marker (a requeued job's old result was purged):
        write over exactly that marker, still refusing to overwrite a result written meanwhile."""
        lay = self.lay
        subject = lay.kv_subject(lay.results_bucket, jid)
        try:
            last = await self.b.js.get_last_msg(lay.kv_stream(lay.results_bucket), subject)
            await self.b.js.publish(subject, result, headers={_EXPECTED_LAST: str(last.seq)})
        except APIError as exc:
            if exc.err_code != _WRONG_LAST_SEQ:
                raise

    async def _commit(self, d: Delivery, result: bytes, rec: dict) -> None:
        """Status, then result (create-only, acked), then the message ack.

        The status mirror goes out first without a round trip of its own: on one
        connection the server stores it before the result, so whoever is woken by
        the result reads the final status too. The message is acked only once the
        result is stored.
        """
        jid = d.meta.job_id
        await self._status_nowait(jid, rec)
        res_fut = await self.b.publish_async(self.lay.kv_subject(self.lay.results_bucket, jid), result,
                                             headers=dict(_CREATE_ONLY))
        try:
            await res_fut
        except APIError as exc:
            if exc.err_code != _WRONG_LAST_SEQ:
                raise
            # A result exists already (cancelled meanwhile, or a duplicate run): it stands.
            existing = await get_result(self.b, jid)
            if existing is not None:
                await self._status(jid, {**rec, "status": existing.status, "error": existing.meta.get("error")})
            else:
                await self._write_over_marker(jid, result)
        await d.msg.ack()
        await blobs.job_ended(self.b, d.msg.data, rec["status"])  # its offloaded body is no longer needed
        self.w.stats["processed"] += 1

    async def _status(self, job_id: str, rec: dict) -> None:
        await self.b.js.publish(self.lay.kv_subject(self.lay.status_bucket, job_id), encode_status(rec))

    async def _status_nowait(self, job_id: str, rec: dict) -> None:
        # Intermediate states go out without waiting for the ack: the final state is acked.
        await self.b.nc.publish(self.lay.kv_subject(self.lay.status_bucket, job_id), encode_status(rec))

    async def _flush_progress(self, ctx: JobContext) -> None:
        rec = dict(getattr(ctx, "record", {}))
        if rec.get("status") != JobStatus.RUNNING.value:
            return
        rec.update(ctx.snapshot())
        ctx.record = rec  # type: ignore[attr-defined]
        await self._status_nowait(ctx.job_id, rec)

    async def dead_letter(self, msg: Msg, queue: str, *, reason: str, **info: Any) -> None:
        """Copy ``msg`` to the failed stream with why it failed (original headers and body kept)."""
        headers = {k: v for k, v in (msg.headers or {}).items() if k in (HEADER_META, "Naq-Sig")}
        body = pack_record({"reason": reason, "failed_at": time.time(), "worker": self.w.worker_id,
                            "original_headers": headers, **info}, msg.data or b"")
        headers["Naq-Reason"] = reason.replace("\r", " ").replace("\n", " ")[:500]
        await self.b.js.publish(self.lay.failed_subject(queue), body, headers=headers)

    async def reject_malformed(self, msg: Msg, queue: str, exc: Exception) -> None:
        """A message that is not a decodable naq job: to the failed stream, acked, worker goes on."""
        log.warning("moving malformed message on queue %s to the failed stream: %s", queue, exc)
        await self.dead_letter(msg, queue, reason=f"malformed message: {exc}", attempts=1)
        await msg.ack()
        self.w.stats["malformed"] += 1


def parse_meta(msg: Msg) -> JobMeta:
    return decode_meta(msg.headers)
