"""The failed-jobs stream: list jobs that ran out of retries (or could not be decoded), requeue them.

A failed entry keeps the original job headers and body, so a requeue republishes
exactly what was enqueued; its result and status are reset so waiters see the
new run.
"""

from __future__ import annotations

import json
import time
from typing import AsyncIterator, TypedDict

from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError

from . import payloads
from .broker import Broker
from .envelope import HEADER_META, HEADER_MSG_ID
from .errors import JobNotFoundError
from .job import JobStatus
from .status import encode_status, first_record
from .serialization import unpack_record

__all__ = ["FailedEntry", "list_failed", "requeue_failed"]


class FailedEntry(TypedDict):
    """One entry of the failed stream as :func:`list_failed` reports it."""

    seq: int  # its sequence in the failed stream (a requeue reference)
    job_id: str | None  # None: a malformed message (no Naq-Meta header)
    queue: str
    func: str | None
    reason: str | None  # why it was dead-lettered
    error: str | None  # the same text as ``reason``
    traceback: str
    attempts: int | None
    failures: int | None
    worker: str | None
    failed_at: float | None
    exc_type: str | None
    requeueable: bool  # it carries its original job headers


async def _iter_failed(broker: Broker, queue: str | None, limit: int) -> AsyncIterator[api.RawStreamMsg]:
    lay = broker.layout
    await broker.ensure_layout()
    info = await broker.js.stream_info(lay.failed_stream)
    seq, last = info.state.first_seq, info.state.last_seq
    subject = lay.failed_subject(queue) if queue else None
    found = 0
    while seq and seq <= last and found < limit:
        try:
            raw = await broker.js.get_msg(lay.failed_stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return
        assert raw.seq is not None  # a stored message always has its sequence
        yield raw
        found += 1
        seq = raw.seq + 1


def _entry(raw: api.RawStreamMsg, broker: Broker) -> FailedEntry:
    info, body = unpack_record(raw.data or b"\n")
    meta = {}
    hdrs = raw.headers or {}
    if hdrs.get(HEADER_META):
        try:
            meta = json.loads(hdrs[HEADER_META])
        except ValueError:
            meta = {}
    if not isinstance(meta, dict):  # a malformed message's header may be any JSON
        meta = {}
    assert raw.seq is not None  # a stored message always has its sequence
    return {
        "seq": raw.seq,
        "job_id": meta.get("id"),
        "queue": broker.layout.queue_of_subject(raw.subject or ""),
        "func": meta.get("fn"),
        "reason": info.get("reason"),
        "error": info.get("reason"),
        "traceback": info.get("traceback", ""),
        "attempts": info.get("attempts"),
        "failures": info.get("failures"),
        "worker": info.get("worker"),
        "failed_at": info.get("failed_at"),
        "exc_type": info.get("exc_type"),
        "requeueable": bool(meta),
    }


async def list_failed(broker: Broker, queue: str | None = None, limit: int = 1000) -> list[FailedEntry]:
    """Failed jobs, oldest first: seq, job_id, queue, func, reason, traceback, attempts, worker."""
    return [_entry(raw, broker) async for raw in _iter_failed(broker, queue, limit)]


async def _find(broker: Broker, ref: str | int) -> api.RawStreamMsg:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        try:
            return await broker.js.get_msg(broker.layout.failed_stream, seq=int(ref))
        except NotFoundError:
            raise JobNotFoundError(f"no failed entry with sequence {ref}") from None
    async for raw in _iter_failed(broker, None, 10**9):
        hdr = (raw.headers or {}).get(HEADER_META)
        if hdr and json.loads(hdr).get("id") == ref:
            return raw
    raise JobNotFoundError(f"no failed job with id {ref!r}")


async def requeue_failed(broker: Broker, ref: str | int) -> str:
    """Put a failed job (by job id or failed-stream sequence) back on its queue; returns the job id."""
    raw = await _find(broker, ref)
    assert raw.seq is not None  # a stored message always has its sequence
    info, body = unpack_record(raw.data or b"\n")
    headers = dict(info.get("original_headers") or {})
    if HEADER_META not in headers:
        raise JobNotFoundError(
            f"failed entry {raw.seq} is not a naq_nb job ({info.get('reason')}); it cannot be requeued"
        )
    meta = json.loads(headers[HEADER_META])
    jid, queue = meta["id"], meta["q"]
    lay = broker.layout
    results = await broker.kv(lay.results_bucket)
    await payloads.drop_result(broker, jid)  # its object (a result over max_payload) goes with it
    try:
        await results.purge(jid)  # the old failure must not answer waiters of the new run
    except KeyNotFoundError:
        pass
    rec = first_record(
        jid,
        queue,
        JobStatus.QUEUED,
        func=meta.get("fn"),
        name=None,
        enqueued_at=time.time(),
        requeued_from=raw.seq,
        depends_on=meta.get("deps") or [],
    )
    await broker.js.publish(lay.kv_subject(lay.status_bucket, jid), encode_status(rec))
    # A fresh message id: the original one may still be inside the de-duplication window.
    headers[HEADER_MSG_ID] = f"{jid}-requeue-{raw.seq}"
    await broker.js.publish(lay.queue_subject(queue), body, headers=headers)
    await broker.js.delete_msg(lay.failed_stream, raw.seq)
    return jid
