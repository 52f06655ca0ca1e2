"""Workers as seen through their heartbeats in the workers bucket."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, NotRequired, TypedDict

from . import jsontext
from .broker import Broker
from .kvscan import scan_bucket
from .layout import QUEUE_NAME_RE
from .status import record_time

__all__ = ["WorkerRecord", "list_workers", "encode_heartbeat", "decode_heartbeat"]

log = logging.getLogger("naq_nb")


class WorkerRecord(TypedDict):
    """A worker's heartbeat in the workers bucket (key = worker id), rewritten every heartbeat interval."""

    id: str
    name: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    state: str  # created | idle | busy | stopping | stopped
    execution: str  # processes | threads
    running: list[str]  # ids of the jobs it runs now
    parked: int  # jobs it holds parked on dependencies
    started_at: float
    heartbeat_at: float
    stats: dict[str, int]  # processed, failed, retried, malformed, ...
    heartbeat_age: NotRequired[float]  # seconds since ``heartbeat_at``: added by :func:`list_workers`


def encode_heartbeat(rec: WorkerRecord) -> bytes:
    """A worker's heartbeat record as stored in the workers bucket (compact JSON; ``rec`` is left as it is)."""
    return json.dumps(rec, separators=(",", ":"), default=str).encode()


# --- checks on a decoded record -----------------------------------------------------------
def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0  # JSON true is no count


def _is_time(v: object) -> bool:
    return record_time(v) is not None


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_queue_list(v: object) -> bool:
    # Queue names become subjects and table cells: a worker only ever serves valid ones.
    return isinstance(v, list) and all(isinstance(q, str) and QUEUE_NAME_RE.fullmatch(q) for q in v)


def _is_stats(v: object) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _is_count(n) for k, n in v.items())


# Every field a reader of a heartbeat uses, with its check. A field may be absent (a record
# written by an older or smaller writer), but one that is present must pass.
_FIELD_CHECKS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "id": ("a string", _is_str),
    "name": ("a string", _is_str),
    "host": ("a string", _is_str),
    "pid": ("a count", _is_count),
    "queues": ("a list of queue names", _is_queue_list),
    "concurrency": ("a count", _is_count),
    "state": ("a string", _is_str),
    "execution": ("a string", _is_str),
    "running": ("a list of job ids", _is_str_list),
    "parked": ("a count", _is_count),
    "started_at": ("an epoch time", _is_time),
    "heartbeat_at": ("an epoch time", _is_time),
    "stats": ("a mapping of names to counts", _is_stats),
}

# Filled in when absent, so readers can iterate and index them without checking.
_DEFAULTS: dict[str, Callable[[], object]] = {"queues": list, "running": list, "stats": dict}


def _heartbeat_problem(rec: Any) -> str | None:
    """What makes a decoded record no worker's heartbeat (for a warning), or None if it is one."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if "heartbeat_at" not in rec:
        return "no heartbeat_at"
    for field, (what, ok) in _FIELD_CHECKS.items():
        if field in rec and not ok(rec[field]):
            return f"{field} {rec[field]!r:.60} is not {what}"
    return None


def _decode(data: bytes | None) -> tuple[WorkerRecord | None, str]:
    """The record with defaults and ``heartbeat_age`` added, or None and why it is refused."""
    try:
        rec = jsontext.loads(data or b"")
    except ValueError as exc:  # bad UTF-8 and deep nesting too
        return None, f"not JSON ({type(exc).__name__}: {exc})"
    problem = _heartbeat_problem(rec)
    if problem is not None:
        return None, problem
    for field, make in _DEFAULTS.items():
        rec.setdefault(field, make())
    rec["heartbeat_age"] = max(0.0, time.time() - rec["heartbeat_at"])
    return rec, ""


def decode_heartbeat(data: bytes | None) -> WorkerRecord | None:
    """A heartbeat record with ``heartbeat_age`` added, or None for one that is not a worker's (a
    forged or damaged record names no live worker and must not break a listing).

    This is the one place a heartbeat's fields are checked: a record it returns has every field
    a reader uses either absent or of the right type, and ``queues``, ``running`` and ``stats``
    always present, so readers need no checks of their own."""
    return _decode(data)[0]


async def list_workers(broker: Broker) -> list[WorkerRecord]:
    """Live workers (their last heartbeat), with ``heartbeat_age`` in seconds; records that are not
    heartbeats are left out, each with a warning naming its key."""
    out: list[WorkerRecord] = []
    async for item in scan_bucket(broker, broker.layout.workers_bucket):
        rec, problem = _decode(item.value)
        if rec is None:
            log.warning("workers bucket: skipped record %r, not a worker's heartbeat: %s", item.key, problem)
        else:
            out.append(rec)
    return sorted(out, key=lambda r: r.get("id", ""))
