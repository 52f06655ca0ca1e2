"""Queues: enqueue (one or many, pipelined), status, purge (cancelling is :mod:`.cancel`).

Everything here is async and bound to one :class:`Broker`; the client layer
offers sync twins that run these coroutines on its background loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Iterable, NoReturn, Sequence

from nats.js.errors import APIError, NoStreamResponseError

from . import blobs, payloads
from .aftercancel import run_to_end, start_to_end
from .broker import CONNECTION_ERRORS, Broker, quiet_futures
from .claims import call_digest, claim_ids, confirm_claims, is_named
from .deps import dependency_cycle
from .envelope import encode_job, header_size
from .fastbatch import FLOW as FAST_FLOW, FastBatch
from .errors import (
    JS_WRONG_LAST_SEQUENCE,
    ConfigurationError,
    JobNotStoredError,
    NaqConnectionError,
    PublishTimeoutError,
)
from .job import Job, JobOptions, new_job_id
from .jobsend import InFlight, publish_one, status_bytes
from .layout import validate_queue_name
from .queued import get_status, purge_messages
from .sharedfuncs import shared_functions
from .upload import TAKE_BACK_SECONDS
from .withdraw import withdraw

__all__ = [
    "Queue",
    "make_job",
    "get_status",
    "call_digest",
    "ENQUEUE_WINDOW",
]

log = logging.getLogger("naq_nb")


def _check_callable(fn: Any) -> None:
    if isinstance(fn, str):
        if ":" not in fn and "." not in fn:
            raise ConfigurationError(f"a function given by name must be an import path like 'pkg.mod:func', not {fn!r}")
        return
    if not callable(fn):
        raise TypeError(f"the job function must be callable, not {type(fn).__name__}: {fn!r}")


def make_job(
    fn: Callable[..., Any] | str,
    args: Sequence = (),
    kwargs: dict | None = None,
    options: JobOptions | None = None,
    *,
    queue: str,
) -> Job:
    """Build (and check) a job without sending it: on ``options.queue``, else on ``queue``."""
    _check_callable(fn)
    opts = options or JobOptions()
    jid = opts.job_id or opts.key or new_job_id()
    return Job(jid, opts.queue or queue, fn, tuple(args), dict(kwargs or {}), opts)


class Queue:
    """A named queue on a broker. ``await q.enqueue(fn, *args, **kwargs)`` passes
    every keyword to ``fn``; job options come from ``options`` or :meth:`configure`."""

    def __init__(self, broker: Broker, name: str | None = None, options: JobOptions | None = None) -> None:
        self.broker = broker
        self.name = validate_queue_name(name or broker.settings.default_queue)
        self.options = options or JobOptions()

    def configure(self, **options: Any) -> "Queue":
        """A copy of this queue whose jobs use ``options`` (unknown names raise ``TypeError``)."""
        opts = JobOptions.build(self.options, **options)
        return Queue(self.broker, opts.queue or self.name, opts)

    def make_job(
        self,
        fn: Callable[..., Any] | str,
        args: Sequence = (),
        kwargs: dict | None = None,
        options: JobOptions | None = None,
    ) -> Job:
        return make_job(fn, args, kwargs, options or self.options, queue=self.name)

    async def enqueue(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        return await self.enqueue_job(self.make_job(fn, args, kwargs))

    async def enqueue_job(self, job: Job) -> Job:
        jobs = await self.enqueue_jobs([job])
        return jobs[0]

    async def enqueue_many(self, calls: Iterable[tuple[Callable[..., Any] | str, Sequence, dict]]) -> list[Job]:
        """Enqueue many ``(fn, args, kwargs)`` calls with pipelined publishes."""
        return await self.enqueue_jobs([self.make_job(fn, a, k) for fn, a, k in calls])

    async def enqueue_jobs(self, jobs: list[Job]) -> list[Job]:
        """Publish prepared jobs (pipelined); return once every one is acknowledged.

        Each round returns or raises within the broker's ``publish_timeout``. A single job raises its
        own error (:class:`NaqConnectionError` if the server cannot take it). When some of several jobs
        are not stored, publishing stops, the jobs in flight are waited for, and
        :class:`JobNotStoredError` says how many were not stored (their ids: ``not_stored``)."""
        b = self.broker
        await b.ensure_layout()
        cycle = await dependency_cycle(b, jobs)
        if cycle:  # (each would wait for the other for ever)
            raise ConfigurationError(f"job {cycle[0]} would wait for itself: {' -> '.join(cycle)} (a dependency cycle)")
        async with shared_functions(b, jobs):  # a big function shared by many jobs is stored once
            # A chosen id is claimed with a digest of the body: those bodies must be dumps_call's bytes.
            plain, named = b.serializer.batch_dumps_call(functions_once=True), b.serializer.batch_dumps_call()
            encoded = [
                encode_job(
                    j,
                    b.serializer,
                    signing_key=b.settings.signing_key,
                    max_payload=blobs.NO_LIMIT,
                    dumps_call=named if j.options.job_id or j.options.key else plain,
                )
                for j in jobs
            ]  # every job is checked before anything is published
        # Digests of the calls themselves (by job object): an offloaded body is a reference with a
        # fresh object name.
        digests = {id(j): call_digest(body) for j, (_h, body) in zip(jobs, encoded) if is_named(j)}
        limit = blobs.inline_limit(b)
        big = any(header_size(h) + len(body) > limit for h, body in encoded)  # (most enqueues: none)
        if big:
            payloads.check_offloads(b, jobs, encoded)  # a body too big even as a reference: no id claimed
        todo = await claim_ids(b, jobs, encoded, digests)
        if big:
            # After the claims: a reused id's call is stored already, and a copy of its body would be
            # kept by nothing until the bucket's TTL. Bodies over max_payload -> object store references.
            offloaded = await payloads.offload_jobs(b, [j for j, _ in todo], [enc for _, enc in todo])
            todo = [(j, enc) for (j, _), enc in zip(todo, offloaded)]
        sent = _Sent()  # handed to the server so far
        try:
            await _publish_and_confirm(b, todo, digests, big, sent)
        except asyncio.CancelledError:
            # Interrupted (a Ctrl-C, a cancelled task): what it sent is cancelled, not left running
            # with no handle (a job's upload goes with its cancel); the uploads of the jobs it never
            # sent are named by no message, and go too.
            dropping = _drop_unsent(b, todo, sent) if big else None
            await withdraw(b, sent, len(jobs), after=sent.after)
            if dropping is not None:
                await asyncio.shield(dropping)
            raise
        return jobs

    async def purge(self, up_to: int | None = None) -> int:
        """Remove every queued job message of this queue (with ``up_to``, those with a stream sequence
        up to it); returns how many were removed. Only the messages: their status records stay
        ``queued``; :func:`naq_nb.core.cancel.purge_queue` (what ``naq purge`` and the client call)
        also cancels each job it removes."""
        return await purge_messages(self.broker, self.name, up_to)

    async def count(self) -> int:
        """Jobs waiting in this queue (not yet acknowledged by a worker)."""
        b = self.broker
        await b.ensure_layout()
        info = await b.js.stream_info(b.layout.jobs_stream, subjects_filter=b.layout.queue_subject(self.name))
        return int((info.state.subjects or {}).get(b.layout.queue_subject(self.name), 0))

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"


def _drop_unsent(b: Broker, todo: list[tuple[Job, tuple[dict, bytes]]], sent: list[Job]) -> asyncio.Task:
    """Start deleting the uploaded bodies of the jobs of ``todo`` not in ``sent`` (bounded, in a task
    of its own, started before the withdrawal is waited for: a second Ctrl-C must not skip it)."""
    handed = {id(j) for j in sent}
    unsent = [body for j, (_h, body) in todo if id(j) not in handed]
    return start_to_end(payloads.drop_bodies(b, unsent), TAKE_BACK_SECONDS, "deleting the uploads of jobs not sent")


class _Sent(list[Job]):
    """The jobs an enqueue handed to the server, in the order sent, and ``after``: a jobs-stream
    sequence every message of theirs comes after (0: not known), where an interrupt's search for
    messages with no known sequence starts (:func:`.withdraw.withdraw`)."""

    after = 0


async def _publish_and_confirm(
    b: Broker, todo: list[tuple[Job, tuple[dict, bytes]]], digests: dict[int, str], big: bool, sent: _Sent
) -> None:
    """:func:`_publish_all`, then the claims of chosen ids marked for what was stored."""
    try:
        await _publish_all(b, todo, sent)
    except JobNotStoredError as exc:
        lost = set(exc.not_stored)
        await confirm_claims(b, [j for j, _ in todo if j.job_id not in lost], digests)
        raise
    except Exception:
        await confirm_claims(b, [j for j, _ in todo if j.sequence is not None], digests)  # acknowledged
        raise
    await confirm_claims(b, [j for j, _ in todo], digests)
    # Sent again and dropped by the server as a copy (an id whose first enqueue was in doubt): the
    # stored message names the first upload, not this one.
    if big:
        await payloads.drop_bodies(b, [body for j, (_h, body) in todo if j.duplicate])


#: Jobs whose acknowledgements an ``enqueue_jobs`` call waits for at most at once.
ENQUEUE_WINDOW = 512


#: ``enqueue_many`` of at least this many jobs (none keyed) goes in fast-ingest batches when the
#: server takes them (:mod:`.fastbatch`), :data:`FAST_CHUNK` jobs per pair of batches.
FAST_MIN = 64
FAST_CHUNK = 10_000


async def _publish_all(b: Broker, todo: list[tuple[Job, tuple[dict, bytes]]], sent_jobs: _Sent) -> None:
    """Publish ``todo`` in a sliding window of acknowledgements: the server is never sent more than it
    acknowledges soon, and the memory held for acknowledgements stays flat for 100,000 jobs. After a
    failure nothing more is sent; the jobs in flight are settled, then the failures raised at once.
    Each job is added to ``sent_jobs`` as it goes out. Cancelled, it waits (within the publish
    timeout) for what is in flight, so what was stored is known once the cancel propagates."""
    total = len(todo)
    if b.fast_batches and total >= FAST_MIN and not any(j.options.key for j, _ in todo):
        # A fast batch reports no job's sequence: an interrupt searches their queue for their messages
        # from here, not from its first message (one request per call, not per job).
        sent_jobs.after = await _last_seq(b)
        for start in range(0, len(todo), FAST_CHUNK):
            resume = await _publish_fast(b, todo, start, sent_jobs)
            if resume is not None:  # the server stopped taking batches: the rest goes job by job
                todo = todo[resume:]
                break
        else:
            return
    window: deque[InFlight] = deque()
    failed: list[tuple[Job, BaseException]] = []
    sent = 0
    try:
        for job, (headers, body) in todo:
            if len(window) >= ENQUEUE_WINDOW:
                # Popped once settled: a cancel meanwhile leaves it in the window, whose
                # acknowledgements are waited for below.
                await _settle_into(b, window[0], failed)
                window.popleft()
            if failed:
                break
            sent += 1
            sent_jobs.append(job)
            try:
                window.append(await publish_one(b, job, headers, body, status_bytes(job)))
            except NaqConnectionError as exc:  # not even sent: the connection is closed
                failed.append((job, exc))
        while window:
            await _settle_into(b, window[0], failed)
            window.popleft()
    except asyncio.CancelledError:
        await run_to_end(_acks_in(window), b.publish_timeout + 1, "the acknowledgements of an interrupted enqueue")
        raise
    finally:
        for item in window:  # left when cancelled: their outcomes are not anybody's to raise
            quiet_futures(item.status_ack, item.job_ack)
    if not failed:
        return
    if sent == total and all(j.sequence is not None for j, _ in failed):
        # Every job is stored; only queued records were not: they run, and are not reported lost.
        await _add_missing_records(b, [j for j, _ in failed])
        return
    await _raise_not_stored(b, todo, failed, sent, total)


async def _raise_not_stored(
    b: Broker,
    todo: list[tuple[Job, tuple[dict, bytes]]],
    failed: list[tuple[Job, BaseException]],
    sent: int,
    total: int,
) -> NoReturn:
    """After a window with failures (``sent`` of ``todo`` sent, of ``total``): the refused jobs'
    records go, and one error says what was not stored (a single job: its own error)."""
    await _drop_refused_records(b, failed)
    job, first = failed[0]
    if total == 1 and isinstance(first, NoStreamResponseError):
        raise JobNotStoredError(
            f"job {job.job_id} ({job.function_name}) was not stored: no stream took it (deleted, or the "
            "server restarted without its store); the next call makes naq_nb's streams again",
            not_stored=[job.job_id],
        ) from first
    if total == 1:
        raise first  # a single job: its own error (PublishTimeoutError, the server's refusal, ...)
    unsent = [j.job_id for j, _ in todo[sent:]]
    lost = [j.job_id for j, _ in failed if j.sequence is None]  # an acknowledged message is stored
    bare = f", {len(failed) - len(lost):,} stored without their queued record" if len(lost) < len(failed) else ""
    raise JobNotStoredError(
        f"{len(lost) + len(unsent):,} of {total:,} jobs were not stored: {len(lost):,} not "
        f"acknowledged (they may or may not be stored), {len(unsent):,} not sent after that{bare}; the "
        f"others are stored. The first, job {job.job_id} ({job.function_name}): {type(first).__name__}: {first}",
        not_stored=lost + unsent,
    ) from first


async def _publish_fast(
    b: Broker, todo: list[tuple[Job, tuple[dict, bytes]]], start: int, sent_jobs: list[Job]
) -> int | None:
    """One chunk of ``todo`` from ``start`` as two fast-ingest batches side by side: each job's queued
    record, then the job. What the server did not take (and everything after it) is not stored.
    Returns None, or where to go on job by job when a stream stopped allowing batches after connect
    (its refusals are exact; jobs stored already and sent again are dropped as duplicates)."""
    lay = b.layout
    chunk = todo[start : start + FAST_CHUNK]
    records, queued = FastBatch(b, "queued records"), FastBatch(b, f"{len(chunk):,} jobs")
    try:
        await records.open()
        await queued.open()
        for i, (job, (headers, body)) in enumerate(chunk):
            if records.ended or queued.ended:
                await records.end()
                await queued.end()
                break
            last = i == len(chunk) - 1
            sent_jobs.append(job)
            await records.add(lay.kv_subject(lay.status_bucket, job.job_id), status_bytes(job), last=last)
            await queued.add(lay.queue_subject(job.queue_name), body, headers, last=last)
            if i % FAST_FLOW == 0:
                await records.keep_pace()
                await queued.keep_pace()
        (n_jobs, exact), (n_records, records_exact), failure = await _fast_outcome(queued, records)
    except CONNECTION_ERRORS as exc:  # the server went away (a timeout is one): what it acknowledged stands
        (n_jobs, exact), (n_records, records_exact) = (queued.acked, False), (records.acked, False)
        failure = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:  # both batches ended, and their ends heard (before close() below)
        await run_to_end(_end_both(queued, records), b.publish_timeout + 1, "the batches of an interrupted enqueue")
        raise
    finally:
        await records.close()
        await queued.close()
    if n_jobs == len(chunk) and n_records == len(chunk):
        return None
    if (queued.disabled or records.disabled) and exact and records_exact:
        b.fast_batches = False
        log.warning("the server refuses batched publishes now (allow_batched turned off?): job by job from here")
        await _add_missing_records(b, [j for j, _ in chunk[n_records:n_jobs]])
        return start + n_jobs
    if n_jobs == len(chunk):  # every job is stored: a refused record is not a lost job
        await _add_missing_records(b, [j for j, _ in chunk[n_records:n_jobs]])
        return None
    bare = f", {n_jobs - n_records:,} stored without their queued record" if n_records < n_jobs else ""
    not_stored = [j.job_id for j, _ in todo[start + n_jobs :]]
    if exact:  # the jobs after n_jobs are not stored: their records (any that were) go too
        upto = n_records if records_exact else records.sent
        await _drop_refused_records(b, [(j, APIError()) for j, _ in chunk[n_jobs:upto]])
    doubt = "" if exact else f" ({queued.sent - n_jobs:,} sent but not acknowledged may or may not be stored)"
    raise JobNotStoredError(
        f"{len(not_stored):,} of {len(todo):,} jobs were not stored{doubt}: a batch ended at job "
        f"{n_jobs + 1:,} of {len(chunk):,}{bare}; the {start + n_jobs:,} before are stored. {failure}",
        not_stored=not_stored,
    )


async def _last_seq(b: Broker) -> int:
    """The jobs stream's last sequence (0 if it cannot be read now: the publishes that follow meet
    what stopped it, and report it as they do)."""
    if not b.is_connected:  # (the request would wait in nats-py's buffer, and the batches after it)
        return 0
    try:
        return int((await b.js.stream_info(b.layout.jobs_stream)).state.last_seq)
    except _CLEANUP_ERRORS:
        return 0


async def _acks_in(window: deque[InFlight]) -> None:
    """The acknowledgements still due for ``window`` (each fails within the publish timeout): a job
    whose message lands after its cancel would run. One that came gives the job's sequence."""
    acks = [f for item in window for f in (item.status_ack, item.job_ack) if f is not None]
    if acks:
        await asyncio.wait(acks)
    for item in window:
        if item.job_ack.done() and not item.job_ack.cancelled() and item.job_ack.exception() is None:
            item.job.sequence = item.job_ack.result().seq


async def _end_both(queued: FastBatch, records: FastBatch) -> None:
    """End both batches of an interrupted chunk and wait for their ends: then what they stored is.
    (A batch that sent nothing has no end to wait for.)"""
    deadline = asyncio.get_running_loop().time() + queued.b.publish_timeout
    for batch in (records, queued):
        if batch.sent:
            await batch.end()
    for batch in (records, queued):
        if batch.sent:
            try:
                await batch.result(deadline)
            except PublishTimeoutError:
                pass  # in doubt: the search for their messages after this finds what was stored


async def _add_missing_records(b: Broker, stored: list[Job]) -> None:
    """The ``queued`` records of stored jobs whose records were refused, create-only: a worker may
    have written a later one already, which stands."""
    lay = b.layout
    msgs = [
        (lay.kv_subject(lay.status_bucket, j.job_id), status_bytes(j), f"the status of job {j.job_id}") for j in stored
    ]
    errors = await b.publish_each(msgs, create_only=True)
    errors = [e for e in errors if not (isinstance(e, APIError) and e.err_code == JS_WRONG_LAST_SEQUENCE)]
    if errors:  # (which ones is not known: a reader of any of them waits while its message is queued)
        for j in stored:
            j.unrecorded = True
        log.warning(
            "%d stored jobs have no queued record (they run; their status shows once a worker takes them): %s",
            len(errors),
            errors[0],
        )


async def _fast_outcome(queued: FastBatch, records: FastBatch) -> tuple[tuple[int, bool], tuple[int, bool], str]:
    """:meth:`FastBatch.result` of the jobs' batch and of the records'; why not all were stored (or "")."""
    outcomes, why = [], ""
    deadline = asyncio.get_running_loop().time() + queued.b.publish_timeout  # one bound for both: side by side
    for batch in (queued, records):
        try:
            outcomes.append(await batch.result(deadline))
        except PublishTimeoutError as exc:
            outcomes.append((batch.acked, False))
            why = why or str(exc)
        why = why or (f"{batch.what}: {batch.problem}" if batch.problem else "")
    return outcomes[0], outcomes[1], why


_CLEANUP_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, APIError)


async def _drop_refused_records(b: Broker, failed: list[tuple[Job, BaseException]]) -> None:
    """A job message the server refused is not stored: its ``queued`` record, stored just before it,
    goes too, so no reader waits for a job that will never run (best effort: the call raises anyway)."""
    refused = [j for j, exc in failed if isinstance(exc, APIError) and j.sequence is None and not j.options.key]
    if not refused:
        return
    try:
        kv = await b.kv(b.layout.status_bucket)
        outcomes = await asyncio.gather(
            *(kv.delete(j.job_id) for j in refused), return_exceptions=True
        )  # one round trip
    except _CLEANUP_ERRORS as exc:
        outcomes = [exc] * len(refused)
    errors = [e for e in outcomes if isinstance(e, BaseException)]
    if errors:
        log.warning("%d refused jobs keep their queued records (until NAQ_STATUS_TTL): %s", len(errors), errors[0])


async def _settle_into(b: Broker, item: InFlight, failed: list[tuple[Job, BaseException]]) -> None:
    try:
        await _settle(b, item)
    except Exception as exc:  # collected: _publish_all raises them together once the window is settled
        failed.append((item.job, exc))


async def _settle(b: Broker, item: InFlight) -> None:
    """Wait for both acknowledgements of ``item``; the job's stream sequence is known then."""
    job = item.job
    try:
        # Shielded: a cancel here must not cancel the acknowledgement itself, which _acks_in then waits
        # for. (Only one still due: the oldest of a full window is mostly in, and read at no cost.)
        ack = item.job_ack.result() if item.job_ack.done() else await asyncio.shield(item.job_ack)
        job.sequence, job.duplicate = ack.seq, bool(ack.duplicate)  # stored, whatever its status does
        if item.status_ack is not None:
            await item.status_ack
    except BaseException:
        quiet_futures(item.status_ack, item.job_ack)  # one failed: the other's outcome is not raised too
        raise
    if item.status_ack is None and not job.duplicate:
        # A keyed job may duplicate one already running: only a new one gets a status, create-only, since
        # its job is stored and a worker may have written a later record already, which stands.
        lay = b.layout
        errors = await b.publish_each(
            [(lay.kv_subject(lay.status_bucket, job.job_id), item.status, f"the status of {item.what}")],
            create_only=True,
        )
        errors = [e for e in errors if not (isinstance(e, APIError) and e.err_code == JS_WRONG_LAST_SEQUENCE)]
        if errors:
            raise errors[0]
