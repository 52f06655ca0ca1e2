"""Overview tables as pandas DataFrames: ``nq.jobs()``, ``nq.workers()``, ``nq.schedules()``, ``nq.failed()``.

Each has an ``_async`` twin. Columns are fixed, so an empty frame keeps them;
times are timezone-aware UTC timestamps, durations and ages are seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..client.client import Client
from ..client.loop import run_async
from ..client.twins import blocking
from ..client.session import default_client
from ..core.failed import FailedEntry
from ..core.listing import list_jobs
from ..core.registry import WorkerRecord
from . import needs

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "jobs",
    "jobs_async",
    "workers",
    "workers_async",
    "schedules",
    "schedules_async",
    "failed",
    "failed_async",
    "JOB_COLUMNS",
    "WORKER_COLUMNS",
    "SCHEDULE_COLUMNS",
    "FAILED_COLUMNS",
]

JOB_COLUMNS = [
    "job_id",
    "name",
    "function",
    "queue",
    "status",
    "attempts",
    "failures",
    "worker",
    "enqueued_at",
    "started_at",
    "finished_at",
    "duration",
    "progress",
    "total",
    "message",
    "error",
    "depends_on",
]
WORKER_COLUMNS = [
    "worker_id",
    "name",
    "host",
    "pid",
    "queues",
    "concurrency",
    "state",
    "running",
    "processed",
    "failed",
    "retried",
    "started_at",
    "heartbeat_at",
    "heartbeat_age",
]
SCHEDULE_COLUMNS = [
    "schedule_id",
    "function",
    "queue",
    "kind",
    "cron",
    "interval",
    "next_run",
    "repeat",
    "runs",
    "paused",
    "status",
    "failures",
    "last_error",
]
FAILED_COLUMNS = [
    "seq",
    "job_id",
    "queue",
    "function",
    "error",
    "exc_type",
    "attempts",
    "failures",
    "worker",
    "failed_at",
    "requeueable",
    "traceback",
]
_TIMES = {"enqueued_at", "started_at", "finished_at", "heartbeat_at", "next_run", "failed_at"}
# Epoch seconds pandas can hold (nanoseconds in an int64, about years 1677-2262), a little inside.
_TIME_LIMIT = 9.2e9


def _epoch(v: object) -> float | None:
    """``v`` as epoch seconds, or None if it is no time a timestamp can show (a forged or damaged
    record's string, boolean, NaN, infinity or far-off number: its cell is missing, the frame builds)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None  # JSON true is an int to Python, but no time
    # Comparisons refuse NaN and infinities, and a huge JSON integer without overflowing a float.
    return float(v) if -_TIME_LIMIT <= v <= _TIME_LIMIT else None


def _frame(rows: Sequence[Mapping[str, object]], columns: list[str]) -> "pd.DataFrame":
    pd = needs.pandas("a naq_nb table (nq.jobs(), nq.workers(), nq.schedules(), nq.failed())")

    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for c in columns:
        if c in _TIMES:
            seconds = pd.Series([_epoch(v) for v in df[c]], index=df.index, dtype="float64")
            # coerce: whatever pandas still cannot convert becomes NaT rather than failing the frame
            df[c] = pd.to_datetime(seconds, unit="s", utc=True, errors="coerce")
    return df


def _client(client: Client | None) -> Client:
    return client or default_client()


# --- jobs -------------------------------------------------------------------------------
def _job_row(r: dict) -> dict:
    # The same check as the time columns: a duration only between two times the frame shows.
    start, end = _epoch(r.get("started_at")), _epoch(r.get("finished_at"))
    return {
        **r,
        "job_id": r.get("id"),
        "function": r.get("func"),
        "duration": (end - start) if start is not None and end is not None else None,
    }


async def _jobs_rows(c: Client, limit: int | None, status: Any, queue: Any) -> list[dict]:
    # Through the client's _ask, as every listing: an outage is named, never a bare "nats: timeout".
    rows = await c._ask("listing jobs", lambda b: list_jobs(b, limit, status, queue))
    return [_job_row(r) for r in rows]


async def jobs_async(
    limit: int | None = 1000,
    status: str | Iterable[str] | None = None,
    queue: str | Iterable[str] | None = None,
    client: Client | None = None,
) -> "pd.DataFrame":
    """Jobs newest first (at most ``limit``), optionally only some statuses or queues; one row per job."""
    c = _client(client)
    return _frame(await run_async(_jobs_rows(c, limit, status, queue)), JOB_COLUMNS)


jobs = blocking(jobs_async)


# --- workers -----------------------------------------------------------------------------
def _worker_rows(recs: list[WorkerRecord]) -> list[dict]:
    # decode_heartbeat has checked every field (a malformed record never gets here) and always
    # sets running and stats: no checks of their types here.
    out = []
    for r in recs:
        stats = r["stats"]
        out.append(
            {
                **r,
                "worker_id": r.get("id"),
                "running": len(r["running"]),
                "processed": stats.get("processed", 0),
                "failed": stats.get("failed", 0),
                "retried": stats.get("retried", 0),
            }
        )
    return out


async def workers_async(client: Client | None = None) -> "pd.DataFrame":
    """Live workers from their heartbeats: queues, concurrency, running jobs, counts, heartbeat age."""
    return _frame(_worker_rows(await _client(client).workers()), WORKER_COLUMNS)


workers = blocking(workers_async)


# --- schedules -----------------------------------------------------------------------------
async def schedules_async(client: Client | None = None) -> "pd.DataFrame":
    """Schedules (delayed jobs, cron and interval): next run, runs so far, paused or not."""
    from ..client.scheduling import list_scheduled

    return _frame(await list_scheduled(client=_client(client)), SCHEDULE_COLUMNS)


schedules = blocking(schedules_async)


# --- failed -----------------------------------------------------------------------------------
def _failed_rows(recs: list[FailedEntry]) -> list[dict]:
    return [{**r, "function": r.get("func")} for r in recs]


async def failed_async(queue: str | None = None, client: Client | None = None, limit: int = 1000) -> "pd.DataFrame":
    """Jobs in the failed (dead-letter) stream, oldest first, with error and traceback."""
    return _frame(_failed_rows(await _client(client).failed(queue, limit)), FAILED_COLUMNS)


failed = blocking(failed_async)
