"""Cancelling a job: its status marked ``cancelled`` (revision-checked), its queued message
deleted, a running one told to stop, a ``cancelled`` result stored and its dependents failed.
Purging a queue cancels each job it removes the same way."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Collection, TypeGuard

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from . import payloads
from .broker import Broker
from .deps import settle_dependents, settle_dependents_of
from .envelope import HEADER_META, header_meta
from .errors import ConcurrentUpdateError, JobNotFoundError, SerializationError
from .job import TERMINAL, JobStatus
from .layout import validate_job_id
from .oneshot import stream_messages
from .queued import delete_message, purge_messages
from .records import encode_failure
from .schedules import ScheduleNotFoundError, change_schedule
from .results import push_result
from .serialization import seal_record
from .status import STATUS_VALUES, StatusRecord, decode_status, encode_status, with_status

__all__ = ["cancel_job", "purge_queue", "CANCEL_RETRY_SECONDS"]

log = logging.getLogger("naq_nb")


#: How long cancel_job keeps retrying its status update while the job's record keeps changing.
CANCEL_RETRY_SECONDS = 10.0
#: How many messages of its queue cancel_job reads to find a queued job whose record has no sequence.
QUEUED_SCAN_LIMIT = 20_000


async def _mark_cancelled(
    broker: Broker, job_id: str, only_if: Collection[str] | None = None
) -> tuple[StatusRecord, str] | None:
    """Status ``cancelled`` (revision-checked) and the status it had; None if the job already ended
    (or, with ``only_if``, has a status not in it).

    A running job may write its status (progress) between our read and our update: read
    again and retry, backing off, for up to ``CANCEL_RETRY_SECONDS``; then raise rather than
    answer "already ended" for a job that is still live.
    """
    kv = await broker.kv(broker.layout.status_bucket)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_RETRY_SECONDS
    tries = 0
    while True:
        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            raise JobNotFoundError(f"no job with id {job_id!r}") from None
        try:
            rec = decode_status(entry.value or b"")
        except SerializationError as exc:  # name the record, as get_status does
            raise SerializationError(f"cannot cancel job {job_id}: {exc}") from None
        if rec.get("status") not in STATUS_VALUES:  # damaged or forged: say so, change nothing
            raise SerializationError(
                f"cannot cancel job {job_id}: its status record is damaged (status {rec.get('status')!r})"
            )
        if JobStatus(rec["status"]) in TERMINAL or (only_if is not None and rec["status"] not in only_if):
            return None
        before = rec["status"]
        rec = with_status(rec, JobStatus.CANCELLED, finished_at=time.time())
        try:
            await kv.update(job_id, encode_status(rec), last=entry.revision)
            return rec, before
        except KeyWrongLastSequenceError:
            tries += 1  # the job moved on meanwhile; look again
        if loop.time() >= deadline:
            raise ConcurrentUpdateError(
                f"could not cancel job {job_id}: its status changed {tries} times in {CANCEL_RETRY_SECONDS:g} s "
                "while cancelling; try again"
            )
        await asyncio.sleep(min(0.005 * 2 ** min(tries, 6), 0.2))


async def _cancel_schedule(broker: Broker, job_id: str) -> bool:
    """Delete the schedule entry a ``scheduled`` job waits in, or the scheduler fires it anyway (the
    worker that takes it may not have heard of the cancel: started after it, or restarted). False
    if there was none."""
    try:
        await change_schedule(broker, job_id, "cancel")
    except ScheduleNotFoundError:
        return False  # fired (or cancelled) just now: the cancelled status stops what was fired
    return True


async def _queued_seq(broker: Broker, queue: str, job_id: str) -> int | None:
    """The stream sequence of ``job_id``'s message still waiting in ``queue``, read from that queue's
    messages in order (one request each, at most :data:`QUEUED_SCAN_LIMIT`); None if not there."""
    lay = broker.layout
    try:
        subject = lay.queue_subject(queue)
    except ValueError:  # a record's queue is as stored: a name no queue can have has no messages
        return None
    read = 0
    async for raw in stream_messages(broker, lay.jobs_stream, subject):
        meta = (raw.headers or {}).get(HEADER_META) or ""
        if job_id in meta and header_meta(meta).get("id") == job_id:
            return raw.seq
        read += 1
        if read >= QUEUED_SCAN_LIMIT:
            log.warning(
                "job %s: not among the first %d messages of queue %s; it is marked cancelled, and a worker "
                "that has heard of the cancel drops it",
                job_id,
                QUEUED_SCAN_LIMIT,
                queue,
            )
            return None
    return None  # not on the queue: delivered (a worker has it) or gone


async def cancel_job(
    broker: Broker,
    job_id: str,
    sequence: int | None = None,
    *,
    only_if: Collection[str] | None = None,
    reason: str | None = None,
    scan: bool = True,
    plain_body: bool = False,
    dependents: bool = True,
) -> bool:
    """Cancel a job that has not finished. Returns False if it had already ended (or its run ended
    while the cancel was being written: its result stands).

    A queued job is removed from its stream; a waiting or scheduled one is marked
    so its worker drops it; a running one is told to stop through the cancel
    subject (async functions are cancelled, a sync function's result is discarded).
    Raises :class:`JobNotFoundError` for an unknown id, :class:`SerializationError` if its status
    record is damaged, and :class:`ConcurrentUpdateError` if the job's status kept changing for
    ``CANCEL_RETRY_SECONDS``; connection errors propagate. ``only_if``: cancel only a job whose
    status is one of these (else False); ``reason``: the error its result carries; ``scan=False``:
    a queued job with no known ``sequence`` is not looked for in its queue (the caller did);
    ``plain_body``: the caller read its queued message, whose body names no object to delete;
    ``dependents=False``: the caller settles what waits on it (one look at the waiting stream for many).
    """
    validate_job_id(job_id)
    lay = broker.layout
    marked = await _mark_cancelled(broker, job_id, only_if)
    if marked is None:
        return False
    rec, before = marked
    # A delayed job or a schedule: its calendar entry goes too.
    calendar_gone = before == JobStatus.SCHEDULED.value and await _cancel_schedule(broker, job_id)
    seq = sequence or rec.get("seq")
    if scan and not _is_seq(seq) and before == JobStatus.QUEUED.value and isinstance(rec.get("queue"), str):
        # Its record carries no sequence (sent in a batch, or alone, whose record went out before the
        # job): find its message, or a worker started after this cancel (no notice reached it) runs it.
        seq = await _queued_seq(broker, rec["queue"], job_id)
    if _is_seq(seq):  # (a record's seq is as stored: only a real one is used)
        try:
            if not plain_body:
                await payloads.drop_queued_body(broker, seq)  # its offloaded body, if any, goes too
            # (False: already delivered, so a worker sees the cancelled status, or parked on a
            # dependency, or gone)
            await delete_message(broker, lay.jobs_stream, seq)
        except NotFoundError:
            pass  # drop_queued_body: the message went meanwhile
    await broker.nc.publish(lay.cancel_subject, job_id.encode())
    cancelled = await _store_cancelled(broker, job_id, reason or f"job {job_id} was cancelled")
    if rec.get("rt"):  # the client that enqueued it may be waiting for its result: read it now
        await push_result(broker, rec["rt"], job_id)
    if cancelled and not calendar_gone and dependents:  # (a schedule's cancel settled them already)
        await settle_dependents(broker, job_id, "cancelled")  # what waits on it fails now, naming it
    return cancelled


def _is_seq(seq: object) -> TypeGuard[int]:
    return type(seq) is int and seq > 0


async def _store_cancelled(broker: Broker, job_id: str, error: str) -> bool:
    """The job's ``cancelled`` result, create-only; False when its run ended between our mark and
    this write: its result stands, its worker's final status goes over our mark, and its dependents
    follow that result. The job was not cancelled then."""
    results = await broker.kv(broker.layout.results_bucket)
    record = encode_failure(None, None, status=JobStatus.CANCELLED, error=error)
    try:
        await results.create(job_id, seal_record(record, job_id, broker.settings.signing_key))
    except KeyWrongLastSequenceError:
        return False
    return True


#: Purged jobs whose records are settled at once.
PURGE_SETTLE_CONCURRENCY = 64


async def purge_queue(broker: Broker, queue: str) -> int:
    """Remove every job message waiting in ``queue`` (as :meth:`.queue.Queue.purge`) and cancel each removed
    job still ``queued`` or ``retrying``: its record, its waiters and its dependents learn it is gone.
    A bare stream purge left them reading ``queued`` for ever (a ``result()`` timed out advising to
    start a worker, dependents waited out ``NAQ_STATUS_TTL``). A job a worker has started keeps its
    run. Returns how many messages were removed."""
    lay = broker.layout
    await broker.ensure_layout()
    subject = lay.queue_subject(queue)
    last = (await broker.js.stream_info(lay.jobs_stream)).state.last_seq
    removed: list[tuple[int, str]] = []  # (sequence, job id) of what the purge below takes
    async for raw in stream_messages(broker, lay.jobs_stream, subject, 1, last):
        jid = header_meta((raw.headers or {}).get(HEADER_META)).get("id")
        if isinstance(jid, str) and raw.seq is not None:
            removed.append((raw.seq, jid))
    # Up to `last` only: a job enqueued meanwhile was not read, so it stays queued, as its record says.
    purged = await purge_messages(broker, queue, up_to=last)
    gate = asyncio.Semaphore(PURGE_SETTLE_CONCURRENCY)
    reason = f"purged from queue {queue!r}"

    cancelled: list[str] = []

    async def settle(seq: int, jid: str) -> None:
        async with gate:
            try:
                # (plain_body: its message is purged, there is no body to read; what waits on it is
                # settled below, for all of them with one read of the waiting stream)
                if await cancel_job(
                    broker,
                    jid,
                    seq,
                    only_if=_PURGEABLE,
                    reason=f"job {jid} was {reason}",
                    plain_body=True,
                    dependents=False,
                ):
                    cancelled.append(jid)
            except (ValueError, JobNotFoundError, SerializationError, ConcurrentUpdateError) as exc:
                log.warning("job %s %s, but its record was not updated: %s", jid, reason, exc)

    await asyncio.gather(*(settle(seq, jid) for seq, jid in removed))
    await settle_dependents_of(broker, cancelled, "cancelled")
    return purged


_PURGEABLE = frozenset({JobStatus.QUEUED.value, JobStatus.RETRYING.value})
