"""Listing job status records from the status bucket.

One scan of the bucket's stream (:func:`scan_bucket`, last message per key)
reads every record; nothing is fetched key by key, so 10,000 records take one
pass. Filters apply while reading; the newest ``limit``
records (by enqueue time) are returned.
"""

from __future__ import annotations

import heapq
from typing import Iterable

from . import jsontext
from .broker import Broker
from .kvscan import scan_bucket
from .job import JobStatus
from .layout import validate_queue_name
from .status import record_time

__all__ = ["list_jobs"]


def _statuses(status: str | JobStatus | Iterable[str | JobStatus] | None) -> frozenset[str] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, JobStatus)) else list(status)
    out = set()
    for s in items:
        try:
            out.add(JobStatus(str(s)).value)
        except ValueError:
            raise ValueError(f"unknown job status {s!r}; use one of: {', '.join(x.value for x in JobStatus)}") from None
    return frozenset(out)


async def list_jobs(
    broker: Broker,
    limit: int | None = 1000,
    status: str | JobStatus | Iterable[str | JobStatus] | None = None,
    queue: str | Iterable[str] | None = None,
    timeout: float = 30.0,
) -> list[dict]:
    """Status records, newest first, at most ``limit`` (None: all), filtered by status and queue.

    Raises ``ValueError`` for an unknown status or a bad limit, ``TimeoutError``
    if the bucket cannot be read within ``timeout`` seconds.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an int >= 0 or None, not {limit!r}")
    wanted = _statuses(status)
    queues = None if queue is None else _queue_names(queue)
    records: list[dict] = []
    async for item in scan_bucket(broker, broker.layout.status_bucket, timeout):
        try:
            rec = jsontext.loads(item.value)
        except ValueError:
            continue  # a malformed record is skipped, not fatal
        if not isinstance(rec, dict):
            continue
        if wanted is not None and rec.get("status") not in wanted:
            continue
        if queues is not None and rec.get("queue") not in queues:
            continue
        rec.setdefault("id", item.key)
        records.append(rec)

    def key(r: dict) -> float:
        # A forged time (text, a bool, an int too big for a float) sorts last, never raises.
        return record_time(r.get("enqueued_at") or r.get("updated_at")) or 0.0

    if limit is None:
        return sorted(records, key=key, reverse=True)
    return heapq.nlargest(limit, records, key=key)


def _queue_names(queue: object) -> frozenset[str]:
    """``queue`` (a name or several) as checked names: a name no queue can have would match nothing."""
    if isinstance(queue, str):
        return frozenset([validate_queue_name(queue)])
    try:
        names = list(queue)  # type: ignore[call-overload]  # any iterable of names
    except TypeError:
        raise TypeError(
            f"queue must be a queue name or a list of them, not {type(queue).__name__}: {queue!r}"
        ) from None
    return frozenset(validate_queue_name(q) for q in names)
