"""A job's status: the one home of the status names, the status record and its encoding.

Every layer reads statuses through these (``JobStatus.SUCCEEDED``, ``TERMINAL``,
``FAILED_STATES``) and builds, encodes and decodes status records through
:func:`status_record`, :func:`first_record`, :func:`with_status`,
:func:`encode_status` and :func:`decode_status`, never through its own copies.
"""

from __future__ import annotations

import json
import math
import time
from enum import Enum
from json.encoder import encode_basestring_ascii  # what json.dumps(str) runs
from typing import Any, Iterable, TypedDict

from . import jsontext
from .errors import SerializationError

__all__ = [
    "JobStatus",
    "TERMINAL",
    "TERMINAL_VALUES",
    "FAILED_STATES",
    "StatusRecord",
    "initial_status",
    "status_record",
    "first_record",
    "encode_first_record",
    "json_number",
    "json_text",
    "with_status",
    "encode_status",
    "decode_status",
    "trusted_fields",
    "STATUS_VALUES",
    "record_time",
    "text_or_none",
]


class JobStatus(str, Enum):
    """A job's state, as stored in its status record; a str, so it compares equal to ``"queued"`` etc."""

    QUEUED = "queued"
    WAITING = "waiting"  # on dependencies
    SCHEDULED = "scheduled"  # due later
    RUNNING = "running"
    RETRYING = "retrying"  # failed, a retry is due
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``: the job has ended."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


#: The same sets as plain strings, for status records read as JSON.
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
STATUS_VALUES = frozenset(s.value for s in JobStatus)  # every status a record may name
#: Terminal states that are not a success (a dependent of such a job fails).
FAILED_STATES = frozenset({JobStatus.FAILED.value, JobStatus.CANCELLED.value})


class StatusRecord(TypedDict, total=False):
    """One job's record in the status bucket (key = job id); every state change is a put of a new one.

    A schedule's own record (key = schedule id) has the same head plus its calendar fields.
    """

    id: str
    queue: str
    status: str  # a JobStatus value
    updated_at: float  # set by encode_status; 0 on a client's placeholder
    func: str | None
    name: str | None
    enqueued_at: float
    started_at: float
    finished_at: float
    due_at: float  # scheduled: when it is (or was) due
    schedule_id: str | None  # fired by this schedule
    attempts: int  # deliveries so far
    failures: int
    lost: int  # runs lost with their worker
    worker: str | None
    seq: int  # the job message's stream sequence
    depends_on: list[str]
    waiting_on: str  # waiting: the dependency it is parked on
    dependency: str  # failed: the dependency that failed it
    args: str  # a short preview of the arguments
    rt: str  # result inbox token of the client that enqueued it: a cancel pushes its result there
    progress: float
    total: float | None
    message: str | None
    logs: list[str]  # the job's last output lines
    error: str | None
    traceback: str
    retry_at: float  # retrying: when the next attempt is due
    handed_back_at: float  # queued again by a stopping worker
    requeued_from: int  # queued again from this failed-stream entry (a requeue)
    requeue_msg_id: str  # ... published with this message id, which a redo of that requeue reuses
    # failed: its entry's sequence in the failed stream, so a requeue by id reads that entry, not the whole
    # stream (a hint only: the record is unsigned and may be stale; the reader checks the entry it names)
    failed_seq: int


def initial_status(depends_on: Iterable[str]) -> JobStatus:
    """The status a job is published with: ``waiting`` when it has dependencies, else ``queued``."""
    return JobStatus.WAITING if list(depends_on) else JobStatus.QUEUED


def status_record(job_id: str, queue: str, status: JobStatus | str, **fields: Any) -> StatusRecord:
    """A new record: the head (id, queue, status, now) and ``fields``."""
    rec: dict[str, Any] = {"id": job_id, "queue": queue, "status": str(status), "updated_at": time.time()}
    rec.update(fields)
    return rec  # type: ignore[return-value]


def first_record(
    job_id: str,
    queue: str,
    status: JobStatus | str,
    *,
    func: str | None,
    name: str | None,
    enqueued_at: float,
    **fields: Any,
) -> StatusRecord:
    """The record of a job that has not run yet (no attempts, no failures)."""
    return status_record(
        job_id, queue, status, func=func, name=name, enqueued_at=enqueued_at, attempts=0, failures=0, **fields
    )


def encode_first_record(
    job_id: str,
    queue: str,
    status: JobStatus | str,
    *,
    func: str | None,
    name: str | None,
    enqueued_at: float,
    depends_on: list[str],
    args: str,
    rt: str | None = None,
) -> bytes:
    """``encode_status(first_record(..., depends_on=, args=[, rt=]))`` written out: the record every
    enqueued job is published with, so its cost counts (``tests/unit`` holds the two forms equal)."""
    t, n = json_text, json_number
    deps = json.dumps(depends_on, separators=(",", ":")) if depends_on else "[]"
    return (
        f'{{"id":{t(job_id)},"queue":{t(queue)},"status":{t(status)},"updated_at":{n(time.time())},'
        f'"func":{t(func)},"name":{t(name)},"enqueued_at":{n(enqueued_at)},"attempts":0,"failures":0,'
        f'"depends_on":{deps},"args":{t(args)}' + (f',"rt":{t(rt)}}}' if rt else "}")
    ).encode()


def json_number(x: float) -> str:
    """``json.dumps(x)`` for a number, without building an encoder per call for a finite float."""
    return float.__repr__(x) if type(x) is float and math.isfinite(x) else json.dumps(x)


def json_text(s: str | None) -> str:
    """``json.dumps(s)`` for a string (a ``JobStatus`` too) or None, without json.dumps' dispatch."""
    return "null" if s is None else encode_basestring_ascii(s)


def with_status(
    rec: StatusRecord | dict, status: JobStatus | str, *, drop: Iterable[str] = (), **fields: Any
) -> StatusRecord:
    """A copy of ``rec`` moved to ``status`` with ``fields`` set and the keys in ``drop`` removed."""
    dropped = set(drop)
    new: dict[str, Any] = {k: v for k, v in rec.items() if k not in dropped}
    new.update(fields, status=str(status))
    return new  # type: ignore[return-value]


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # made once: json.dumps with options makes one a call


def encode_status(rec: StatusRecord | dict) -> bytes:
    """The stored form (compact JSON) with ``updated_at`` set to now; ``rec`` itself is left as it is."""
    return _ENCODER.encode({**rec, "updated_at": time.time()}).encode()


def decode_status(data: bytes) -> StatusRecord:
    """A stored record; :class:`SerializationError` when it is not a JSON object. Its fields are
    as stored: a reader that acts on one checks its type (:func:`trusted_fields` for a worker)."""
    try:
        rec = jsontext.loads(data)
    except ValueError as exc:
        raise SerializationError(f"malformed status record: {exc}") from None
    if not isinstance(rec, dict):
        raise SerializationError(f"malformed status record: a JSON object is needed, not {type(rec).__name__}")
    return rec  # type: ignore[return-value]  # an object; fields unchecked, as documented


#: The fields a worker acts on when it finds a job's earlier record, and the type each must have.
_TRUSTED: dict[str, type] = {
    "status": str,
    "seq": int,
    "attempts": int,
    "failures": int,
    "lost": int,
    "worker": str,
    "error": str,
}


def trusted_fields(record: StatusRecord | dict) -> tuple[StatusRecord, list[str]]:
    """``record`` with the fields in ``_TRUSTED`` that have the wrong type (or a negative count)
    dropped, and their names: a damaged or forged record then counts as one that lacks them,
    never as a crash (or a hand-back loop) in the worker."""
    rec: dict[str, Any] = dict(record)
    bad = [
        k
        for k, t in _TRUSTED.items()
        if k in rec
        and rec[k] is not None
        and (not isinstance(rec[k], t) or isinstance(rec[k], bool) or (t is int and rec[k] < 0))
    ]
    kept = {k: v for k, v in rec.items() if k not in bad}
    return kept, bad  # type: ignore[return-value]  # the same record, fewer fields


# 2100-01-01 UTC: a record's time past this (or before 1970) was not written by naq_nb's clock.
_LATEST_TIME = 4102444800.0


def record_time(value: object) -> float | None:
    """A time read from any stored record (status, heartbeat, dead letter) as epoch seconds, or None
    when it is no time naq_nb writes: text, a bool, NaN, an infinity, out of 1970-2100 (a forged
    far-future heartbeat would look alive for ever). A huge JSON integer is compared, never
    converted, so it cannot overflow."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _LATEST_TIME:
        return None
    return float(value)


def text_or_none(value: object) -> str | None:
    """A stored record's text field as text (a forged number or list through ``str``); None kept."""
    return value if value is None or isinstance(value, str) else str(value)
