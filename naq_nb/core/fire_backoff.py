"""A schedule whose fire keeps failing: its own growing wait, and the failure written where users look.

A fire can fail for good (a stored job this server refuses as too large, a queue no stream takes):
retried on every tick it flooded the log and the server twice a second, for ever. Each schedule
now waits :data:`FIRST_WAIT` s after its first failure, doubling up to :data:`MAX_WAIT` s; a fire
that succeeds (or a reconnect: an outage's failures say nothing about the schedule) starts it over.
Its record counts the consecutive failures and keeps the last error (``failures``,
``last_error``: ``naq list-scheduled``, ``nq.schedules()``), and so does its status record
(``failures``, ``error``: ``naq jobs --id``); the next fire that succeeds clears both.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from nats.errors import MaxPayloadError

from .broker import CONNECTION_ERRORS, Broker
from .errors import NaqException
from .job import JobStatus
from .schedules import Schedule, publish_schedule_status

__all__ = ["FireBackoff", "FireError", "record_failure", "FIRST_WAIT", "MAX_WAIT"]

log = logging.getLogger("naq_nb.scheduler")

#: Seconds a schedule waits after its first failed fire; doubled after each further one ...
FIRST_WAIT = 0.5
#: ... up to this.
MAX_WAIT = 60.0
#: Characters of an error kept in a schedule's record.
ERROR_CHARS = 500


class FireBackoff:
    """When each failing schedule may be fired again (its due time otherwise)."""

    def __init__(self) -> None:
        self._waits: dict[str, tuple[float, float]] = {}  # schedule id -> (retry at, last wait)

    def due(self, s: Schedule) -> float | None:
        """When ``s`` is next to be fired: its next run, or later while it backs off."""
        held = self._waits.get(s.id)
        if s.next_run is None or held is None:
            return s.next_run
        return max(s.next_run, held[0])

    def failed(self, sid: str, now: float) -> float:
        """Note a failed fire at ``now``; the seconds schedule ``sid`` waits before the next try."""
        held = self._waits.get(sid)
        wait = FIRST_WAIT if held is None else min(held[1] * 2, MAX_WAIT)
        self._waits[sid] = (now + wait, wait)
        return wait

    def succeeded(self, sid: str) -> None:
        self._waits.pop(sid, None)

    forget = succeeded  # ``sid`` left the calendar (cancelled, deleted): its wait goes with it

    def reset(self) -> list[str]:
        """Forget every wait (after a reconnect); the ids that were waiting."""
        ids = list(self._waits)
        self._waits.clear()
        return ids


async def record_failure(b: Broker, s: Schedule, body: bytes, error: str) -> Schedule | None:
    """Schedule ``s`` (as last read) with one more consecutive failure and ``error`` as its last,
    stored revision-checked (a change meanwhile wins: the next failure is written on it), and in
    its status record; None if not stored (changed meanwhile, or no connection)."""
    new = replace(s, failures=s.failures + 1, last_error=error[:ERROR_CHARS])
    try:
        kv = await b.kv(b.layout.schedules_bucket)
        new.revision = await kv.update(b.layout.schedule_key(s.id), new.encode(body), last=s.revision)
        if s.kind != "once":  # (a one-shot's status record is its job's: `scheduled` with its due time)
            await publish_schedule_status(b, new, JobStatus.SCHEDULED, failures=new.failures, error=new.last_error)
    except CONNECTION_ERRORS as exc:  # (a change meanwhile: KeyWrongLastSequenceError, a nats error)
        log.debug("recording schedule %s's failure: %s", s.id, exc)
        return None
    return new


class FireError(NaqException):
    """A due schedule could not be fired (its cause chained); it is tried again after its wait."""

    schedule_id: str = ""
    why: str = ""  # its cause, as the schedule's record keeps it

    @classmethod
    def of(cls, s: Schedule, size: int, max_payload: int, exc: Exception, wait: float) -> "FireError":
        """``exc`` naming schedule ``s`` (job of ``size`` bytes) it stopped: a bare "maximum payload
        exceeded" twice a second said neither which schedule nor why."""
        why = str(exc) or type(exc).__name__
        if isinstance(exc, MaxPayloadError):
            why += f" (its job is {size} bytes; this server takes {max_payload})"
        err = cls(f"schedule {s.id!r} not fired ({s.failures + 1} in a row), tried again in {wait:g} s: {why}")
        err.__cause__, err.schedule_id, err.why = exc, s.id, why
        return err
