"""Sending one job: its ``queued`` status record, then its message, in one socket write
(:func:`publish_one`, the step of every enqueue), and the ways one plain job is stored without its
caller waiting for the acknowledgements: handed to the background loop (:func:`prepare_unacked`,
:func:`publish_prepared`) or written from the caller's own loop (:func:`direct_send`,
:func:`publish_direct`). Batches, windows and fast-ingest batches are :mod:`.queue`'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, NamedTuple

from . import blobs
from .broker import Broker, quiet_futures
from .envelope import encode_job, header_size
from .job import Job
from .preview import args_preview
from .status import encode_first_record, initial_status

__all__ = [
    "InFlight",
    "status_bytes",
    "publish_one",
    "prepare_unacked",
    "publish_prepared",
    "DIRECT_LIMIT",
    "DirectSend",
    "direct_send",
    "publish_direct",
]

log = logging.getLogger("naq_nb")


class InFlight(NamedTuple):
    """A job sent by :func:`publish_one`: its two acknowledgements to come."""

    job: Job
    status_ack: asyncio.Future | None
    job_ack: asyncio.Future
    status: bytes
    what: str


def status_bytes(job: Job) -> bytes:
    """The job's first status record (``queued``, or ``waiting`` with dependencies)."""
    deps = job.options.depends_on
    return encode_first_record(
        job.job_id,
        job.queue_name,
        initial_status(deps),
        func=job.function_name,
        name=job.options.name,
        enqueued_at=job.enqueue_time,
        depends_on=list(deps),
        args=args_preview(job.args, job.kwargs),
        rt=job.reply,
    )


async def publish_one(b: Broker, job: Job, headers: dict, body: bytes, status: bytes) -> InFlight:
    """Publish the status record and the job without waiting (one socket write, in this order)."""
    lay = b.layout
    what = f"job {job.job_id} ({job.function_name})"
    st_fut = None
    if not job.options.key:
        # Status first: a fast worker's "running" then always lands after "queued".
        st_fut = await b.publish_async(
            lay.kv_subject(lay.status_bucket, job.job_id), status, what=f"the status of {what}"
        )
    try:
        pub_fut = await b.publish_async(lay.queue_subject(job.queue_name), body, headers=headers, what=what)
    except BaseException:
        quiet_futures(st_fut)  # the job was not sent: its failure is the news, not its record's
        raise
    return InFlight(job, st_fut, pub_fut, status, what)


def prepare_unacked(b: Broker, job: Job) -> tuple[dict, bytes, bytes] | None:
    """``(headers, body, status record)`` of a job that may be stored without the caller waiting for
    its acknowledgements (see :func:`publish_prepared`), or None when it needs the full path: a chosen
    id (claimed first), or a body over the inline limit (object store). Thread-safe: it only encodes."""
    if job.options.job_id or job.options.key:
        return None
    headers, body = encode_job(job, b.serializer, signing_key=b.settings.signing_key, max_payload=blobs.NO_LIMIT)
    if header_size(headers) + len(body) > blobs.inline_limit(b):
        return None
    return headers, body, status_bytes(job)


async def publish_prepared(
    b: Broker, job: Job, prepared: tuple[dict, bytes, bytes], on_done: Callable[[BaseException | None], None]
) -> None:
    """Publish a job from :func:`prepare_unacked` without waiting: ``on_done(None)`` once both its
    records are acknowledged (``job.sequence`` is set then), ``on_done(error)`` if either is not,
    within the broker's publish timeout. Call on the broker's loop."""
    headers, body, status = prepared
    try:
        item = await publish_one(b, job, headers, body, status)
    except Exception as exc:  # not even sent (connection closed): reported the same way
        on_done(exc)
        return
    both = _BothAcked(job, on_done)
    item.job_ack.add_done_callback(both.job)
    if item.status_ack is None:  # (a prepared job always has one)
        both.status(None)
    else:
        item.status_ack.add_done_callback(both.status)


class _BothAcked:
    """A job's two acknowledgements (its status record's, its message's) reported once, when both
    are in: ``on_done(None)`` with ``job.sequence`` set once the message is stored (a refused status
    record is then logged, not reported: the job runs), or ``on_done(the message's failure)``."""

    def __init__(self, job: Job, on_done: Callable[[BaseException | None], None]) -> None:
        self._job, self._on_done = job, on_done
        self._acks: dict[str, asyncio.Future | None] = {}

    def status(self, fut: asyncio.Future | None) -> None:
        self._got("status", fut)

    def job(self, fut: asyncio.Future) -> None:
        self._got("job", fut)

    def _got(self, key: str, fut: asyncio.Future | None) -> None:
        self._acks[key] = fut
        if len(self._acks) < 2:
            return
        job_ack, status_ack = self._acks["job"], self._acks["status"]
        assert job_ack is not None
        job_exc = _outcome(job_ack)
        status_exc = None if status_ack is None else _outcome(status_ack)
        if job_exc is None:
            self._job.sequence = job_ack.result().seq
            if status_exc is not None:  # stored, and it runs: only its "queued" record is missing
                self._job.unrecorded = True
                log.warning(
                    "job %s is stored but its queued record was not (%s: %s); its status shows once a worker takes it",
                    self._job.job_id,
                    type(status_exc).__name__,
                    status_exc,
                )
        self._on_done(job_exc)


def _outcome(fut: asyncio.Future) -> BaseException | None:
    """The future's exception, retrieved (a cancel is one too)."""
    return asyncio.CancelledError() if fut.cancelled() else fut.exception()


#: A job (with its status record) over this many bytes is not written within the call by
#: :func:`publish_direct`: an empty socket takes that much at once on any link.
DIRECT_LIMIT = 16 * 1024


class DirectSend(NamedTuple):
    """A job ready for :func:`publish_direct`: its two commands and the acknowledgement tokens they name."""

    cmds: list[bytes]
    tokens: tuple[str, str]


def direct_send(b: Broker, acks: Broker, job: Job, prepared: tuple[dict, bytes, bytes]) -> DirectSend | None:
    """What :func:`publish_direct` writes for a job from :func:`prepare_unacked`, or None when it can't
    go that way (too big: :data:`DIRECT_LIMIT`; ``b`` not writable now; ``acks`` not receiving yet).
    Nothing is registered or sent. Call on ``b``'s loop, and publish before that loop runs again."""
    headers, body, status = prepared
    if header_size(headers) + len(body) + len(status) > DIRECT_LIMIT or not b.can_write_now():
        return None
    slots = [acks.reserve_ack(), acks.reserve_ack()]
    if slots[0] is None or slots[1] is None:
        return None
    lay = b.layout
    cmds = b.commands(
        [
            (lay.kv_subject(lay.status_bucket, job.job_id), status, slots[0][1], None),  # status first, as publish_one
            (lay.queue_subject(job.queue_name), body, slots[1][1], headers),
        ]
    )
    return None if cmds is None else DirectSend(cmds, (slots[0][0], slots[1][0]))


def publish_direct(
    b: Broker, acks: Broker, job: Job, send: DirectSend, on_done: Callable[[BaseException | None], None]
) -> None:
    """:func:`publish_prepared` from the caller's own loop: the job goes out on ``b`` (that loop's
    connection) within this call, and its acknowledgements come to ``acks`` (the background loop's),
    where ``on_done`` runs. So the job is on its way, and its store is confirmed, even if the caller
    then blocks its loop (a blocking call in a notebook cell). ``send`` from :func:`direct_send`."""
    both = _BothAcked(job, on_done)
    what = f"job {job.job_id} ({job.function_name})"
    acks.expect_ack(send.tokens[0], f"the status of {what}", both.status)  # before the write: an ack
    acks.expect_ack(send.tokens[1], what, both.job)  # may come back before this call returns
    b.write_now(send.cmds)
