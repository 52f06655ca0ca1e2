"""One occurrence of a schedule onto its queue: its status marked ``queued``, then its job published.

The publish carries ``Nats-Msg-Id`` = the occurrence id, so a repeated fire is dropped by
JetStream; past its de-duplication window the status record tells (:func:`why_not_fire`): an
occurrence a worker moved on, or one cancelled before it was due, is not published again.
"""

from __future__ import annotations

import logging
import time

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from .broker import Broker
from .job import JobStatus
from .schedules import Schedule, job_message, why_not_fire
from .status import encode_status, first_record

__all__ = ["publish_occurrence"]

log = logging.getLogger("naq_nb.scheduler")


async def publish_occurrence(b: Broker, s: Schedule, body: bytes, job_id: str, due: float) -> None:
    """Publish schedule ``s``'s occurrence ``job_id`` (due at ``due``) unless its status says not to."""
    lay = b.layout
    skip = await _mark_queued(b, s, job_id, due)
    if skip is not None:
        log.info("occurrence %s not fired: %s", job_id, skip)
        return
    ack = await b.js.publish(
        lay.queue_subject(s.queue), body, headers=job_message(s, body, job_id, due, b.settings.signing_keys)
    )
    if ack.duplicate:
        log.info("occurrence %s was already fired; JetStream dropped the duplicate", job_id)


async def _mark_queued(b: Broker, s: Schedule, job_id: str, due: float) -> str | None:
    """Status ``queued``, then None: publish it. Else why not (:func:`why_not_fire`)."""
    kv = await b.kv(b.layout.status_bucket)
    rec = first_record(
        job_id,
        s.queue,
        JobStatus.QUEUED,
        func=s.function,
        name=s.meta.get("name"),
        enqueued_at=time.time(),
        due_at=due,
        schedule_id=s.id,
    )
    try:
        entry = await kv.get(job_id)
        skip, marked = why_not_fire(entry.value)
        if skip is not None:
            return skip
        if not marked:  # (marked queued by a fire that may not have published: publish, as is)
            await kv.update(job_id, encode_status(rec), last=entry.revision)
    except KeyNotFoundError:
        try:
            await kv.create(job_id, encode_status(rec))
        except KeyWrongLastSequenceError:
            pass
    except KeyWrongLastSequenceError:  # changed meanwhile: a cancel, or a worker's record
        try:
            return why_not_fire((await kv.get(job_id)).value)[0]
        except KeyNotFoundError:
            return None
    return None
