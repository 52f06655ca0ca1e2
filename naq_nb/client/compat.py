"""naq's API on naq_nb: ``enqueue``/``enqueue_sync``, ``Queue``, ``fetch_job_result``, ...

In these functions naq's option names (``queue_name``, ``nats_url``,
``max_retries``, ``retry_delay``, ``retry_strategy``, ``retry_on``,
``ignore_on``, ``depends_on``, ``timeout``, ``result_ttl``,
``prefer_thread_local``) are options, and every other keyword goes to the
function. When a function needs a parameter with one of those names, use
``Queue(...).configure(...).enqueue(...)``: there every keyword goes to the
function. The README's compatibility table lists what differs from naq.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from ..core.errors import ConfigurationError, UnknownQueueError
from ..core.job import Job, JobOptions
from ..core.jobview import register_readers
from ..core.layout import validate_queue_name
from ..core.schedules import require_calendar
from ..core.registry import WorkerRecord
from . import shared as _shared
from .client import Client
from .shared import close_all_clients, get_client
from .naq_options import split_naq_options
from .twins import blocking


__all__ = [
    "Queue",
    "JobTemplate",
    "enqueue",
    "enqueue_sync",
    "enqueue_many",
    "enqueue_many_sync",
    "fetch_job_result",
    "fetch_job_result_sync",
    "close_sync_connections",
    "list_workers",
    "list_workers_sync",
    "purge_queue",
    "purge_queue_sync",
    "get_job_status",
    "get_job_status_sync",
    "cancel_job",
    "cancel_job_sync",
]


class JobTemplate:
    """Fixed job options; ``enqueue(fn, *args, **kwargs)`` passes every keyword to ``fn``."""

    def __init__(self, client: Client, options: JobOptions) -> None:
        self.client = client
        self.options = options

    def configure(self, **options: Any) -> "JobTemplate":
        """A template with these options added to (or replacing) this one's."""
        return JobTemplate(self.client, JobOptions.build(self.options, **options))

    def _job(self, fn: Callable[..., Any] | str, args: Sequence, kwargs: dict) -> Job:
        job = self.client.make_job(fn, args, kwargs, self.options)
        job._client = self.client  # type: ignore[attr-defined]  # job.status / job.fetch_result() use it
        return job

    async def enqueue(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``fn(*args, **kwargs)`` with this template's options."""
        return (await self.client.enqueue_jobs([self._job(fn, args, kwargs)]))[0]

    enqueue_sync = blocking(enqueue)

    async def enqueue_many(self, fn: Callable[..., Any] | str, calls: Sequence[tuple | dict | Any]) -> list[Job]:
        """One job per call: a tuple of args, a dict of kwargs, or a single argument."""
        if isinstance(calls, (str, bytes, dict)) or not isinstance(calls, Iterable):
            raise TypeError(
                f"enqueue_many(fn, calls): calls must be a list of calls (a tuple of args, a dict of kwargs, or "
                f"one argument each), not {type(calls).__name__}"
            )
        calls = list(calls)
        if len(calls) > 1 and (self.options.job_id or self.options.key):
            raise ConfigurationError("job_id / key name one job; they cannot be used with enqueue_many()")
        return await self.client.enqueue_jobs([self._job(fn, *_call(c)) for c in calls])

    enqueue_many_sync = blocking(enqueue_many)

    # Calendars, kept apart from the function's keywords: ``.every(cron=...).enqueue(fn, cron=...)``.
    def at(self, when: Any) -> "Any":
        """A template that runs its jobs at ``when`` (datetime, naive = UTC, or epoch seconds)."""
        from .scheduling import ScheduledTemplate
        from ..core.timespec import to_epoch

        return ScheduledTemplate(self.client, self.options, at=to_epoch(when, "when"))

    def after(self, delay: Any) -> "Any":
        """A template that runs its jobs after ``delay`` (seconds or a timedelta)."""
        from .scheduling import ScheduledTemplate, _delay_to_time

        return ScheduledTemplate(self.client, self.options, at=_delay_to_time(delay))

    def every(
        self,
        *,
        cron: str | None = None,
        interval: Any = None,
        repeat: int | None = None,
        timezone: str | None = None,
        misfire: str | None = None,
    ) -> "Any":
        """A template for recurring jobs (see :func:`naq_nb.schedule`)."""
        from .scheduling import ScheduledTemplate

        require_calendar(cron, interval)
        cal = dict(cron=cron, interval=interval, repeat=repeat, timezone=timezone, misfire=misfire)
        return ScheduledTemplate(self.client, self.options, **{k: v for k, v in cal.items() if v is not None})


def _call(c: Any) -> tuple[tuple, dict]:
    if isinstance(c, tuple):
        return c, {}
    if isinstance(c, dict):
        return (), c
    return (c,), {}


class Queue:
    """naq's ``Queue``: ``await q.enqueue(fn, *args, max_retries=..., **kwargs)`` or ``q.enqueue_sync(...)``.

    ``name``: 1-64 letters, digits, ``_`` or ``-`` (naq also allows ``.``; here a
    name is one token of the subject ``naq.jobs.<name>``, and a dot would split
    it). ``default_timeout``: the timeout of jobs enqueued through this Queue
    that give none. ``prefer_thread_local`` is accepted: connections here are
    always shared by the process and safe from any thread. ``nats_options`` go to
    nats-py (``token=...``, ``user_credentials=...``).
    """

    def __init__(
        self,
        name: str | None = None,
        nats_url: str | None = None,
        default_timeout: float | None = None,
        prefer_thread_local: bool = False,
        *,
        client: Client | None = None,
        **nats_options: Any,
    ) -> None:
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"Queue(client=...) needs a naq_nb Client or None, not {type(client).__name__}")
        self.client = client or get_client(nats_url, **nats_options)
        self.name = _queue_name(self.client.settings.default_queue if name is None else name)
        self.default_timeout = default_timeout
        self._base = JobOptions.build(queue=self.name, timeout=default_timeout)  # checks default_timeout now

    def configure(self, **options: Any) -> JobTemplate:
        """Job options apart from the function's arguments: ``q.configure(timeout=5).enqueue(fn, timeout=1)``."""
        return JobTemplate(self.client, self._base).configure(**options)

    def _template(self, kwargs: dict) -> tuple[JobTemplate, dict]:
        opts, kwargs = split_naq_options(kwargs)
        return self.configure(**opts), kwargs

    async def enqueue(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``func(*args, **kwargs)``; naq's option keywords are options (see the module doc)."""
        t, kwargs = self._template(kwargs)
        return await t.enqueue(func, *args, **kwargs)

    enqueue_sync = blocking(enqueue)

    async def enqueue_many(self, func: Callable[..., Any] | str, calls: Sequence[Any]) -> list[Job]:
        """One job per call (a tuple of args, a dict of kwargs, or a single argument), with this Queue's
        defaults; returns once every job is acknowledged (``configure(...)`` first for other options)."""
        return await self.configure().enqueue_many(func, calls)

    enqueue_many_sync = blocking(enqueue_many)

    # --- scheduling (naq's Queue methods; the module-level forms are in naq_nb.client.scheduling) ----------
    def _sched(self, kwargs: dict) -> dict:
        if self.default_timeout is not None and kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return dict(client=self.client, queue_name=self.name, **kwargs)

    async def enqueue_at(self, dt: datetime | float, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Run ``func(*args, **kwargs)`` at ``dt`` (naive = UTC; in the past = now); needs a running scheduler."""
        from . import scheduling

        return await scheduling.enqueue_at(dt, func, *args, **self._sched(kwargs))

    enqueue_at_sync = blocking(enqueue_at)

    async def enqueue_in(
        self, delta: timedelta | float, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """Run ``func(*args, **kwargs)`` after ``delta`` (a timedelta or seconds)."""
        from . import scheduling

        return await scheduling.enqueue_in(delta, func, *args, **self._sched(kwargs))

    enqueue_in_sync = blocking(enqueue_in)

    async def schedule(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """A recurring job: ``cron=`` or ``interval=``, ``repeat=`` (also ``timezone``, ``misfire``,
        ``schedule_id``); see :func:`naq_nb.schedule`."""
        from . import scheduling

        return await scheduling.schedule(func, *args, **self._sched(kwargs))

    schedule_sync = blocking(schedule)

    async def cancel_scheduled_job(self, job_id: Job | str) -> bool:
        """Delete a schedule; True. An unknown id raises ScheduleNotFoundError (a JobNotFoundError)."""
        from . import scheduling

        return await scheduling.cancel_scheduled_job(job_id, client=self.client)

    cancel_scheduled_job_sync = blocking(cancel_scheduled_job)

    async def pause_scheduled_job(self, job_id: Job | str) -> bool:
        """Stop firing until resumed; True (as in naq)."""
        from . import scheduling

        return bool(await scheduling.pause_scheduled_job(job_id, client=self.client))

    pause_scheduled_job_sync = blocking(pause_scheduled_job)

    async def resume_scheduled_job(self, job_id: Job | str) -> bool:
        """Fire again; True."""
        from . import scheduling

        return bool(await scheduling.resume_scheduled_job(job_id, client=self.client))

    resume_scheduled_job_sync = blocking(resume_scheduled_job)

    async def modify_scheduled_job(self, job_id: Job | str, **updates: Any) -> bool:
        """Change ``cron``, ``interval``, ``repeat``, ``next_run`` (naq: ``scheduled_timestamp_utc``), ...; True."""
        from . import scheduling

        return bool(await scheduling.modify_scheduled_job(job_id, client=self.client, **updates))

    modify_scheduled_job_sync = blocking(modify_scheduled_job)

    # --- the queue itself ------------------------------------------------------------------
    async def purge(self) -> int:
        """Drop every job waiting in this queue; returns how many."""
        return await self.client.purge(self.name)

    purge_sync = blocking(purge)

    async def count(self) -> int:
        """Jobs waiting in this queue, counting every enqueue this process's client made before the call."""
        return await self.client.queue_size(self.name)

    count_sync = blocking(count)

    async def close(self) -> None:
        """Close this Queue's connection (naq's end of a batch). A later call reconnects.

        The connection is shared with other Queues of the same URL; they reconnect on
        their next call. The session's own client (``nq.connect`` / ``nq.local``) is
        left open: it belongs to the notebook, not to this Queue.
        """
        if self.client is not _shared.session_default():
            await self.client.close()

    close_sync = blocking(close)

    async def __aenter__(self) -> "Queue":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<naq_nb.Queue {self.name!r} at {self.client.url}>"


def _queue_name(name: Any) -> str:
    """naq's rules where they agree (empty: ValueError); a dot is refused, with the reason."""
    if isinstance(name, str) and not name:
        raise UnknownQueueError("Queue name cannot be empty")
    if isinstance(name, str) and "." in name:
        raise UnknownQueueError(
            f"invalid queue name {name!r}: '.' is not allowed here (naq allows it). A queue name is one token "
            "of the NATS subject naq.jobs.<queue>; a dot would make it several tokens, outside the jobs "
            "stream's naq.jobs.* subjects. Use '_' or '-' instead."
        )
    return validate_queue_name(name)


# --- module-level helpers, naq style ------------------------------------------------


async def enqueue(
    func: Callable[..., Any] | str,
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    """Enqueue ``func(*args, **kwargs)``; naq's option keywords are options (see the module doc)."""
    return await Queue(queue_name, nats_url).enqueue(func, *args, **kwargs)


enqueue_sync = blocking(enqueue)


async def enqueue_many(
    func: Callable[..., Any] | str,
    calls: Sequence[Any],
    *,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **options: Any,
) -> list[Job]:
    """One job per call (tuple = args, dict = kwargs), published pipelined."""
    return await Queue(queue_name, nats_url).configure(**options).enqueue_many(func, calls)


enqueue_many_sync = blocking(enqueue_many)


def _job_id(job: Job | str) -> str:
    """The id of ``job`` (an id, or the Job an enqueue returned); a TypeError at the call for anything else."""
    jid = job if isinstance(job, str) else getattr(job, "job_id", None)
    if not isinstance(jid, str):
        raise TypeError(f"a job is named by its id (str) or the Job enqueue() returned, not {job!r}")
    return jid


def _client_for(job: Job | str, nats_url: str | None) -> Client:
    """The client that enqueued ``job`` when it is a handle and no URL is given, else the shared one."""
    client = getattr(job, "_client", None) if nats_url is None and not isinstance(job, str) else None
    return client if client is not None else get_client(nats_url)


async def fetch_job_result(job_id: Job | str, nats_url: str | None = None, *, timeout: float | None = 0) -> Any:
    """The job's result; raises its exception if it failed (also a ``JobExecutionError``).

    ``timeout=0`` (naq's behaviour) does not wait and raises
    :class:`JobNotFinishedError` (a JobNotFoundError) if the job has not ended;
    ``timeout=None`` waits as long as it takes. Also ``Job.fetch_result(job_id)``
    and ``job.fetch_result()``.
    """
    jid = _job_id(job_id)
    return await _client_for(job_id, nats_url).result(jid, timeout)


fetch_job_result_sync = blocking(fetch_job_result)


async def get_job_status(job_id: Job | str, *, nats_url: str | None = None) -> dict:
    """The job's status record (``status``, ``attempts``, ``error``, times...); JobNotFoundError if it has none."""
    return await get_client(nats_url).status(_job_id(job_id))


get_job_status_sync = blocking(get_job_status)


async def cancel_job(job: Job | str, *, nats_url: str | None = None) -> bool:
    """Cancel a job that has not ended (its result becomes "cancelled"); False if it had ended already."""
    jid = _job_id(job)
    seq = None if isinstance(job, str) else getattr(job, "sequence", None)
    return await get_client(nats_url).cancel(jid, seq)


cancel_job_sync = blocking(cancel_job)


async def list_workers(nats_url: str | None = None) -> list[WorkerRecord]:
    """The live workers, from their heartbeat records."""
    return await get_client(nats_url).workers()


list_workers_sync = blocking(list_workers)


async def purge_queue(queue_name: str | None = None, nats_url: str | None = None) -> int:
    """Drop every job waiting in ``queue_name`` (default: the default queue); returns how many."""
    return await Queue(queue_name, nats_url).purge()


purge_queue_sync = blocking(purge_queue)


def close_sync_connections(nats_url: str | None = None) -> None:
    """Close the shared connections (naq's name); later calls reconnect on demand.

    naq closes the calling thread's connection to ``nats_url``; here connections
    are shared by all threads, so every shared one is closed (``nats_url`` is accepted).
    """
    close_all_clients()


def _status_record(job: Job) -> dict:
    return _client_for(job, None).status_sync(job.job_id)


register_readers(record=_status_record, fetch=fetch_job_result, fetch_sync=fetch_job_result_sync)
