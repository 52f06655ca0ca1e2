"""Scheduling calls, naq style: ``enqueue_at``, ``enqueue_in``, ``schedule`` and schedule control.

Each has an async form and a ``_sync`` twin that works in scripts, threads and
inside a running loop. As in :mod:`naq_nb.client.compat`, naq's option names
(``queue_name``, ``nats_url``, ``max_retries``, ``retry_delay``, ``timeout``) are
options and every other keyword goes to the function. When the function itself
takes a keyword called ``cron`` or ``timeout``, use the template form, where every
keyword reaches the function::

    Queue("reports").configure(timeout=60).every(cron="0 7 * * *").enqueue(report, cron="x")

Times are UTC: a naive datetime is read as UTC, and a due time in the past runs
at once. See :mod:`naq_nb.core.schedules` for the misfire policy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

from ..core.errors import ConfigurationError
from ..core.job import Job, JobOptions
from ..core.layout import validate_job_id
from ..core.schedules import (
    ScheduleNotFoundError,
    ScheduleRow,
    change_schedule,
    list_schedules,
    make_schedule,
    require_calendar,
    save_schedule,
)
from ..core.timespec import after_delay, to_epoch
from .client import Client
from .shared import get_client
from .naq_options import split_naq_options
from .loop import run_async
from .twins import blocking

__all__ = [
    "ScheduledTemplate",
    "enqueue_at",
    "enqueue_at_sync",
    "enqueue_in",
    "enqueue_in_sync",
    "schedule",
    "schedule_sync",
    "cancel_scheduled_job",
    "cancel_scheduled_job_sync",
    "pause_scheduled_job",
    "pause_scheduled_job_sync",
    "resume_scheduled_job",
    "resume_scheduled_job_sync",
    "modify_scheduled_job",
    "modify_scheduled_job_sync",
    "list_scheduled",
    "list_scheduled_sync",
    "ScheduleNotFoundError",
]

_CALENDAR = ("at", "cron", "interval", "repeat", "timezone", "misfire", "misfire_grace")


class ScheduledTemplate:
    """Job options plus a calendar; ``enqueue(fn, *args, **kwargs)`` passes every keyword to ``fn``."""

    def __init__(self, client: Client, options: JobOptions, **calendar: Any) -> None:
        unknown = set(calendar) - set(_CALENDAR)
        if unknown:
            raise TypeError(f"unknown schedule option(s): {', '.join(sorted(unknown))}; known: {', '.join(_CALENDAR)}")
        self.client = client
        self.options = options
        self.calendar = calendar

    async def _enqueue(self, fn: Callable[..., Any] | str, args: Sequence, kwargs: dict) -> Job:
        job = self.client.make_job(fn, args, kwargs, self.options)
        job._client = self.client  # type: ignore[attr-defined]  # job.status / job.fetch_result() use it
        cal = dict(self.calendar)
        when = cal.pop("at", None)
        tz = cal.pop("timezone", None)
        broker = await self.client.broker()
        s, body = make_schedule(job, broker, when=None if when is None else to_epoch(when, "when"), tz=tz, **cal)
        await self.client._ask(storing_schedule(s.id), lambda b: save_schedule(b, s, body))
        return job

    async def enqueue(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Store the schedule; returns the Job whose ``job_id`` is the schedule id."""
        return await run_async(self._enqueue(fn, args, kwargs))

    enqueue_sync = blocking(enqueue)


def _template(
    client: Client | None,
    nats_url: str | None,
    queue_name: str | None,
    kwargs: dict,
    schedule_id: str | None = None,
    **calendar: Any,
) -> tuple[ScheduledTemplate, dict]:
    opts, kwargs = split_naq_options(kwargs)
    c = client or get_client(nats_url)
    if schedule_id is not None:
        opts["job_id"] = schedule_id
    options = JobOptions.build(queue=queue_name or c.settings.default_queue, **opts)
    return ScheduledTemplate(c, options, **{k: v for k, v in calendar.items() if v is not None}), kwargs


def _delay_to_time(delay: timedelta | float | int, what: str = "delay") -> float:
    """``delay`` from now as epoch seconds; ``what`` names the argument in the error."""
    given = delay
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"{what} must be seconds or a timedelta, not {type(delay).__name__}: {delay!r}")
    if delay != delay or delay in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{what} must be a finite number of seconds, not {delay!r}")
    return after_delay(float(delay), what, given)


# --- enqueue_at / enqueue_in / schedule ----------------------------------------------


async def enqueue_at(
    dt: datetime | float,
    func: Callable[..., Any] | str,
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    client: Client | None = None,
    **kwargs: Any,
) -> Job:
    """Run ``func(*args, **kwargs)`` at ``dt`` (naive = UTC; past = at once). Status ``scheduled`` until then."""
    t, kw = _template(client, nats_url, queue_name, kwargs, at=to_epoch(dt, "dt"))
    return await t.enqueue(func, *args, **kw)


enqueue_at_sync = blocking(enqueue_at)


async def enqueue_in(
    delta: timedelta | float,
    func: Callable[..., Any] | str,
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    client: Client | None = None,
    **kwargs: Any,
) -> Job:
    """Run ``func(*args, **kwargs)`` after ``delta`` (seconds or a timedelta)."""
    t, kw = _template(client, nats_url, queue_name, kwargs, at=_delay_to_time(delta, "delta"))
    return await t.enqueue(func, *args, **kw)


enqueue_in_sync = blocking(enqueue_in)


async def schedule(
    func: Callable[..., Any] | str,
    *args: Any,
    cron: str | None = None,
    interval: float | timedelta | None = None,
    repeat: int | None = None,
    timezone: str | None = None,
    misfire: str | None = None,
    misfire_grace: float | None = None,
    schedule_id: str | None = None,
    queue_name: str | None = None,
    nats_url: str | None = None,
    client: Client | None = None,
    **kwargs: Any,
) -> Job:
    """Run ``func`` on a cron calendar (5 fields, or 6 with seconds last; ``timezone`` follows its DST)
    or every ``interval`` seconds, ``repeat`` times (None = forever). Returns the Job; its id is the schedule id."""
    t, kw = _template(
        client,
        nats_url,
        queue_name,
        kwargs,
        schedule_id,
        cron=cron,
        interval=interval,
        repeat=repeat,
        timezone=timezone,
        misfire=misfire,
        misfire_grace=misfire_grace,
    )
    require_calendar(cron, interval)
    return await t.enqueue(func, *args, **kw)


schedule_sync = blocking(schedule)


# --- control ----------------------------------------------------------------------------


def _sid(ref: Job | str) -> str:
    """A schedule's id from the id or the handle ``schedule()`` returned, checked at the call."""
    jid = getattr(ref, "job_id", ref) if not isinstance(ref, str) else ref
    if not isinstance(jid, str):
        raise TypeError(f"a schedule is named by its id (str) or the job schedule() returned, not {ref!r}")
    return validate_job_id(jid, "schedule_id")


async def _change_on_loop(c: Client, sid: str, action: str, changes: dict) -> ScheduleRow | None:
    s = await c._ask(f"changing schedule {sid} ({action})", lambda b: change_schedule(b, sid, action, **changes))
    return None if s is None else s.to_row()


def storing_schedule(sid: str) -> str:
    """What an unanswered schedule store was doing, and that its outcome is unknown."""
    return f"storing schedule {sid} (it may or may not be stored: list_scheduled() says, before a call again)"


async def _change(
    client: Client | None, nats_url: str | None, ref: Job | str, action: str, **changes: Any
) -> ScheduleRow | None:
    sid = _sid(ref)  # a bad id raises here, before any connection is made
    return await run_async(_change_on_loop(client or get_client(nats_url), sid, action, changes))


async def cancel_scheduled_job(job_id: Job | str, nats_url: str | None = None, *, client: Client | None = None) -> bool:
    """Delete a schedule; True. An unknown id raises :class:`ScheduleNotFoundError` (a JobNotFoundError)."""
    await _change(client, nats_url, job_id, "cancel")
    return True


cancel_scheduled_job_sync = blocking(cancel_scheduled_job)


async def pause_scheduled_job(
    job_id: Job | str, nats_url: str | None = None, *, client: Client | None = None
) -> ScheduleRow:
    """Stop firing until resumed; returns the schedule's row."""
    return await _change(client, nats_url, job_id, "pause")  # type: ignore[return-value]


pause_scheduled_job_sync = blocking(pause_scheduled_job)


async def resume_scheduled_job(
    job_id: Job | str, nats_url: str | None = None, *, client: Client | None = None
) -> ScheduleRow:
    """Fire again; runs missed while paused are skipped (beyond the misfire grace)."""
    return await _change(client, nats_url, job_id, "resume")  # type: ignore[return-value]


resume_scheduled_job_sync = blocking(resume_scheduled_job)


def _naq_changes(changes: dict) -> dict:
    # naq's name for the next run time (its CLI's reschedule --next-run writes it).
    if "scheduled_timestamp_utc" in changes:
        if "next_run" in changes:
            raise ConfigurationError("give next_run or scheduled_timestamp_utc, not both")
        changes["next_run"] = changes.pop("scheduled_timestamp_utc")
    return changes


async def modify_scheduled_job(
    job_id: Job | str, nats_url: str | None = None, *, client: Client | None = None, **changes: Any
) -> dict:
    """Change ``cron``, ``interval``, ``repeat``, ``next_run`` (reschedule; naq: ``scheduled_timestamp_utc``),
    ``timezone`` or the misfire policy."""
    return await _change(client, nats_url, job_id, "modify", **_naq_changes(changes))  # type: ignore[return-value]


modify_scheduled_job_sync = blocking(modify_scheduled_job)


async def _rows(c: Client) -> list[ScheduleRow]:
    return [s.to_row() for s in await c._ask("listing schedules", list_schedules)]


async def list_scheduled(*, nats_url: str | None = None, client: Client | None = None) -> list[ScheduleRow]:
    """Every schedule as a row (schedule_id, function, queue, kind, cron, interval, next_run, runs, paused, ...)."""
    return await run_async(_rows(client or get_client(nats_url)))


list_scheduled_sync = blocking(list_scheduled)
