"""naq's API on naq_nb: ``enqueue``/``enqueue_sync``, ``Queue``, ``fetch_job_result``, ...

naq's README examples run unchanged with ``from naq_nb import ...``. In these
functions naq's option names (``queue_name``, ``nats_url``, ``max_retries``,
``retry_delay``, ``depends_on``, ``timeout``) are options, and every other
keyword goes to the function. When a function needs a parameter with one of
those names, use ``Queue(...).configure(...).enqueue(...)``: there every
keyword goes to the function.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..core.job import Job, JobOptions
from ..core.layout import validate_queue_name
from .client import Client, close_all_clients, get_client


__all__ = ["Queue", "JobTemplate", "enqueue", "enqueue_sync", "enqueue_many", "enqueue_many_sync",
           "fetch_job_result", "fetch_job_result_sync", "close_sync_connections", "list_workers",
           "list_workers_sync", "purge_queue", "purge_queue_sync", "get_job_status", "get_job_status_sync",
           "cancel_job", "cancel_job_sync"]

_NAQ_OPTIONS = ("max_retries", "retry_delay", "depends_on", "timeout")


def _split(kwargs: dict) -> tuple[dict, dict]:
    opts = {k: kwargs.pop(k) for k in _NAQ_OPTIONS if k in kwargs}
    if opts.get("max_retries") is None:
        opts.pop("max_retries", None)
    if opts.get("retry_delay") is None:
        opts.pop("retry_delay", None)
    if opts.get("timeout") is None:
        opts.pop("timeout", None)
    return opts, kwargs


class JobTemplate:
    """Fixed job options; ``enqueue(fn, *args, **kwargs)`` passes every keyword to ``fn``."""

    def __init__(self, client: Client, options: JobOptions) -> None:
        self.client = client
        self.options = options

    def configure(self, **options: Any) -> "JobTemplate":
        return JobTemplate(self.client, JobOptions.build(self.options, **options))

    def _job(self, fn: Callable[..., Any] | str, args: Sequence, kwargs: dict) -> Job:
        return self.client.make_job(fn, args, kwargs, self.options)

    async def enqueue(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``fn(*args, **kwargs)`` with this template's options."""
        return (await self.client.enqueue_jobs([self._job(fn, args, kwargs)]))[0]

    def enqueue_sync(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Blocking form of :meth:`enqueue`."""
        return self.client.enqueue_jobs_sync([self._job(fn, args, kwargs)])[0]

    async def enqueue_many(self, fn: Callable[..., Any] | str, calls: Sequence[tuple | dict | Any]) -> list[Job]:
        """One job per call: a tuple of args, a dict of kwargs, or a single argument."""
        return await self.client.enqueue_jobs([self._job(fn, *_call(c)) for c in calls])

    def enqueue_many_sync(self, fn: Callable[..., Any] | str, calls: Sequence[tuple | dict | Any]) -> list[Job]:
        return self.client.enqueue_jobs_sync([self._job(fn, *_call(c)) for c in calls])

    # Calendars, kept apart from the function's keywords: ``.every(cron=...).enqueue(fn, cron=...)``.
    def at(self, when: Any) -> "Any":
        """A template that runs its jobs at ``when`` (datetime, naive = UTC, or epoch seconds)."""
        from .scheduling import ScheduledTemplate
        from ..core.schedules import to_epoch
        return ScheduledTemplate(self.client, self.options, at=to_epoch(when, "when"))

    def after(self, delay: Any) -> "Any":
        """A template that runs its jobs after ``delay`` (seconds or a timedelta)."""
        from .scheduling import ScheduledTemplate, _delay_to_time
        return ScheduledTemplate(self.client, self.options, at=_delay_to_time(delay))

    def every(self, *, cron: str | None = None, interval: Any = None, repeat: int | None = None,
              timezone: str | None = None, misfire: str | None = None) -> "Any":
        """A template for recurring jobs (see :func:`naq_nb.schedule`)."""
        from .scheduling import ScheduledTemplate, _require_calendar
        _require_calendar(cron, interval)
        cal = dict(cron=cron, interval=interval, repeat=repeat, timezone=timezone, misfire=misfire)
        return ScheduledTemplate(self.client, self.options, **{k: v for k, v in cal.items() if v is not None})


def _call(c: Any) -> tuple[tuple, dict]:
    if isinstance(c, tuple):
        return c, {}
    if isinstance(c, dict):
        return (), c
    return (c,), {}


class Queue:
    """naq's ``Queue``: ``await q.enqueue(fn, *args, max_retries=..., **kwargs)`` or ``q.enqueue_sync(...)``."""

    def __init__(self, name: str | None = None, nats_url: str | None = None, *, client: Client | None = None,
                 **nats_options: Any) -> None:
        self.client = client or get_client(nats_url, **nats_options)
        self.name = validate_queue_name(name or self.client.settings.default_queue)

    def configure(self, **options: Any) -> JobTemplate:
        """Job options apart from the function's arguments: ``q.configure(timeout=5).enqueue(fn, timeout=1)``."""
        return JobTemplate(self.client, JobOptions.build(queue=self.name)).configure(**options)

    def _template(self, kwargs: dict) -> tuple[JobTemplate, dict]:
        opts, kwargs = _split(kwargs)
        return self.configure(**opts), kwargs

    async def enqueue(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        t, kwargs = self._template(kwargs)
        return await t.enqueue(func, *args, **kwargs)

    def enqueue_sync(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        t, kwargs = self._template(kwargs)
        return t.enqueue_sync(func, *args, **kwargs)

    async def purge(self) -> int:
        return await self.client.purge(self.name)

    def purge_sync(self) -> int:
        return self.client.purge_sync(self.name)

    async def count(self) -> int:
        return await self.client.queue_size(self.name)

    def count_sync(self) -> int:
        return self.client.queue_size_sync(self.name)

    def __repr__(self) -> str:
        return f"<naq_nb.Queue {self.name!r} at {self.client.url}>"


# --- module-level helpers, naq style ------------------------------------------------

async def enqueue(func: Callable[..., Any] | str, *args: Any, queue_name: str | None = None,
                  nats_url: str | None = None, **kwargs: Any) -> Job:
    """Enqueue ``func(*args, **kwargs)``; naq options: max_retries, retry_delay, depends_on, timeout."""
    return await Queue(queue_name, nats_url).enqueue(func, *args, **kwargs)


def enqueue_sync(func: Callable[..., Any] | str, *args: Any, queue_name: str | None = None,
                 nats_url: str | None = None, **kwargs: Any) -> Job:
    """Blocking :func:`enqueue`; works in scripts, threads and inside a running loop."""
    return Queue(queue_name, nats_url).enqueue_sync(func, *args, **kwargs)


async def enqueue_many(func: Callable[..., Any] | str, calls: Sequence[Any], *, queue_name: str | None = None,
                       nats_url: str | None = None, **options: Any) -> list[Job]:
    """One job per call (tuple = args, dict = kwargs), published pipelined."""
    return await Queue(queue_name, nats_url).configure(**options).enqueue_many(func, calls)


def enqueue_many_sync(func: Callable[..., Any] | str, calls: Sequence[Any], *, queue_name: str | None = None,
                      nats_url: str | None = None, **options: Any) -> list[Job]:
    return Queue(queue_name, nats_url).configure(**options).enqueue_many_sync(func, calls)


def _job_id(job: Job | str) -> str:
    return job if isinstance(job, str) else job.job_id


async def fetch_job_result(job_id: Job | str, *, nats_url: str | None = None, timeout: float | None = 0) -> Any:
    """The job's result; raises its exception if it failed. ``timeout=0`` (naq's behaviour)
    does not wait and raises :class:`JobNotFinishedError` (a JobNotFoundError) if it has not ended;
    ``timeout=None`` waits as long as it takes."""
    return await get_client(nats_url).result(_job_id(job_id), timeout)


def fetch_job_result_sync(job_id: Job | str, *, nats_url: str | None = None, timeout: float | None = 0) -> Any:
    return get_client(nats_url).result_sync(_job_id(job_id), timeout)


async def get_job_status(job_id: Job | str, *, nats_url: str | None = None) -> dict:
    return await get_client(nats_url).status(_job_id(job_id))


def get_job_status_sync(job_id: Job | str, *, nats_url: str | None = None) -> dict:
    return get_client(nats_url).status_sync(_job_id(job_id))


async def cancel_job(job: Job | str, *, nats_url: str | None = None) -> bool:
    seq = None if isinstance(job, str) else job.sequence
    return await get_client(nats_url).cancel(_job_id(job), seq)


def cancel_job_sync(job: Job | str, *, nats_url: str | None = None) -> bool:
    seq = None if isinstance(job, str) else job.sequence
    return get_client(nats_url).cancel_sync(_job_id(job), seq)


async def list_workers(nats_url: str | None = None) -> list[dict]:
    return await get_client(nats_url).workers()


def list_workers_sync(nats_url: str | None = None) -> list[dict]:
    return get_client(nats_url).workers_sync()


async def purge_queue(queue_name: str | None = None, nats_url: str | None = None) -> int:
    return await Queue(queue_name, nats_url).purge()


def purge_queue_sync(queue_name: str | None = None, nats_url: str | None = None) -> int:
    return Queue(queue_name, nats_url).purge_sync()


def close_sync_connections() -> None:
    """Close the shared connections (naq name); later calls reconnect on demand."""
    close_all_clients()


