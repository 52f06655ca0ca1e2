"""What is queued, read or removed by id or by queue: a job's status record (:func:`get_status`),
a queue's waiting messages (:func:`purge_messages`), one message (:func:`delete_message`). Below
:mod:`.queue`, which sends jobs, and :mod:`.cancel` / :mod:`.schedules`, which need these reads
without the sending side.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from nats.js.errors import APIError, KeyNotFoundError

from .errors import JS_MESSAGE_GONE, JobNotFoundError, SerializationError
from .layout import msg_delete_api_subject, purge_api_subject, validate_job_id
from .status import StatusRecord, decode_status

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["delete_message", "get_status", "purge_messages"]


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


async def delete_message(broker: "Broker", stream: str, seq: int) -> bool:
    """Delete message ``seq`` of ``stream``; False if it was gone already. Without the erase nats-py's
    ``delete_msg`` asks for (the message overwritten on disk first): several times slower, and what a
    purge of the same messages never does. Other refusals raise :class:`APIError`."""
    resp = await broker.nc.request(
        msg_delete_api_subject(stream),
        json.dumps({"seq": seq, "no_erase": True}).encode(),
        timeout=broker.publish_timeout,
    )
    err = json.loads(resp.data).get("error")
    if err and err.get("err_code") in JS_MESSAGE_GONE:
        return False
    if err:
        raise APIError(**err)
    return True


async def purge_messages(broker: "Broker", queue: str, up_to: int | None = None) -> int:
    """Remove every job message waiting in ``queue`` (with ``up_to``, those with a stream sequence up
    to it); returns how many were removed. Only the messages: their status records stay as they are."""
    await broker.ensure_layout()
    req: dict = {"filter": broker.layout.queue_subject(queue)}
    if up_to is not None:
        req["seq"] = up_to + 1  # (the server keeps this sequence and what follows)
    resp = await broker.nc.request(purge_api_subject(broker.layout.jobs_stream), json.dumps(req).encode(), timeout=10)
    return int(json.loads(resp.data).get("purged", 0))
