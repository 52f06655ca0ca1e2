"""What is queued, read or removed by id or by queue: a job's status record (:func:`get_status`)
and a queue's waiting messages (:func:`purge_messages`). Below :mod:`.queue`, which sends jobs,
and :mod:`.cancel` / :mod:`.schedules`, which need these reads without the sending side.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from nats.js.errors import KeyNotFoundError

from .errors import JobNotFoundError, SerializationError
from .layout import purge_api_subject, validate_job_id
from .status import StatusRecord, decode_status

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["get_status", "purge_messages"]


async def get_status(broker: "Broker", job_id: str) -> StatusRecord:
    """The job's status record, or :class:`JobNotFoundError`."""
    validate_job_id(job_id)
    kv = await broker.kv(broker.layout.status_bucket)
    try:
        entry = await kv.get(job_id)
    except KeyNotFoundError:
        raise JobNotFoundError(f"no job with id {job_id!r} (it may have expired)") from None
    try:
        return decode_status(entry.value or b"")
    except SerializationError as exc:  # name the record: `naq jobs --id X` said only what was wrong with it
        raise SerializationError(f"job {job_id}: {exc}") from None


async def purge_messages(broker: "Broker", queue: str, up_to: int | None = None) -> int:
    """Remove every job message waiting in ``queue`` (with ``up_to``, those with a stream sequence up
    to it); returns how many were removed. Only the messages: their status records stay as they are."""
    await broker.ensure_layout()
    req: dict = {"filter": broker.layout.queue_subject(queue)}
    if up_to is not None:
        req["seq"] = up_to + 1  # (the server keeps this sequence and what follows)
    resp = await broker.nc.request(purge_api_subject(broker.layout.jobs_stream), json.dumps(req).encode(), timeout=10)
    return int(json.loads(resp.data).get("purged", 0))
