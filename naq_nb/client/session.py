"""The ``nq.*`` calls of a notebook session: connect, submit, map, options, job.

A module-level default client serves them; ``nq.connect(url)`` or
``nq.local()`` sets it, otherwise it is made from ``NAQ_NATS_URL`` on first
use. Every call has a blocking form (works inside Jupyter's running loop too)
and an ``_async`` form awaitable from any event loop.

The function's keyword arguments all go to the function (a function with a
``timeout`` or ``queue`` parameter gets it); job options are given apart,
through :func:`options`, and are checked by name when ``options`` is called.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from ..core.errors import ConfigurationError, JobNotFoundError
from ..core.job import Job, JobOptions
from ..core.queue import get_status
from ..core.results import get_result
from .client import Client, default_client, get_client, set_default_client
from .future import JobFuture, submit_jobs, submit_jobs_sync
from .loop import run_async, run_sync
from .watch import get_watch

__all__ = ["connect", "connect_async", "default_client", "set_default_client", "submit", "submit_async",
           "map", "map_async", "options", "Submitter", "job", "job_async"]

def connect(url: str | None = None, **nats_options: Any) -> Client:
    """Connect to NATS at ``url`` (default ``NAQ_NATS_URL``) and make it the default client.

    ``nats_options`` go to nats-py unchanged (``user``/``password``, ``token``,
    ``user_credentials``, ``tls``, ...). The connection is checked now, within
    ``NAQ_CONNECT_TIMEOUT`` seconds; failure raises :class:`NaqConnectionError`.
    Calling it again with the same arguments returns the same client.
    """
    client = get_client(url, **nats_options)
    run_sync(client.broker())
    set_default_client(client)
    return client


async def connect_async(url: str | None = None, **nats_options: Any) -> Client:
    """Async form of :func:`connect`."""
    client = get_client(url, **nats_options)
    await run_async(client.broker())
    set_default_client(client)
    return client


# --- submitting ---------------------------------------------------------------------
class Submitter:
    """Submits calls with fixed job options; made by :func:`options`."""

    def __init__(self, job_options: JobOptions | None = None, client: Client | None = None) -> None:
        self.job_options = job_options or JobOptions()
        self._client = client

    @property
    def client(self) -> Client:
        """The client jobs go to: the one given, else the session's default at call time."""
        return self._client or default_client()

    def options(self, **job_options: Any) -> "Submitter":
        """A copy with more options (checked now; unknown names raise ``TypeError``)."""
        return Submitter(JobOptions.build(self.job_options, **job_options), self._client)

    def _jobs(self, client: Client, fn: Callable[..., Any] | str, calls: list[tuple[tuple, dict]]) -> list[Job]:
        o = self.job_options
        if len(calls) > 1 and (o.job_id or o.key):
            raise ConfigurationError("job_id / key name one job; they cannot be used with map()")
        return [client.make_job(fn, args, kwargs, o) for args, kwargs in calls]

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; returns its :class:`JobFuture` at once."""
        client = self.client
        return submit_jobs_sync(client, self._jobs(client, fn, [(args, kwargs)]))[0]

    async def submit_async(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
        """Async form of :meth:`submit`."""
        client = self.client
        return (await submit_jobs(client, self._jobs(client, fn, [(args, kwargs)])))[0]

    def map(self, fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> list[JobFuture]:
        """One job per ``fn(*items)`` over the zipped iterables, published pipelined; futures in order."""
        client = self.client
        return submit_jobs_sync(client, self._jobs(client, fn, _zip_calls(iterables)))

    async def map_async(self, fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> list[JobFuture]:
        """Async form of :meth:`map`."""
        client = self.client
        return await submit_jobs(client, self._jobs(client, fn, _zip_calls(iterables)))

    def __repr__(self) -> str:
        return f"<naq_nb.Submitter {self.job_options}>"


def _zip_calls(iterables: tuple[Iterable[Any], ...]) -> list[tuple[tuple, dict]]:
    if not iterables:
        raise TypeError("map() needs at least one iterable of arguments")
    for it in iterables:
        if not hasattr(it, "__iter__"):
            raise TypeError(f"map() arguments must be iterables, not {type(it).__name__}")
    return [(args, {}) for args in zip(*iterables)]


def options(*, client: Client | None = None, **job_options: Any) -> Submitter:
    """A :class:`Submitter` with job options, validated now (unknown names raise ``TypeError``).

    Options: ``queue``, ``retry``, ``max_retries``, ``retry_delay``, ``timeout``,
    ``depends_on`` (JobFutures or ids), ``result_ttl``, ``job_id``, ``key``, ``name``.
    """
    return Submitter(JobOptions.build(**job_options), client)


def submit(fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
    """Run ``fn(*args, **kwargs)`` on a worker (every keyword goes to ``fn``); returns a :class:`JobFuture`."""
    return Submitter().submit(fn, *args, **kwargs)


async def submit_async(fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
    """Async form of :func:`submit`."""
    return await Submitter().submit_async(fn, *args, **kwargs)


def map(fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> list[JobFuture]:  # noqa: A001
    """Like the builtin ``map`` (zip semantics), one job per call, published in one pipelined batch."""
    return Submitter().map(fn, *iterables)


async def map_async(fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> list[JobFuture]:
    """Async form of :func:`map`."""
    return await Submitter().map_async(fn, *iterables)


# --- re-attaching -------------------------------------------------------------------------
async def _job_on_loop(client: Client, job_id: str) -> JobFuture:
    b = await client.broker()
    try:
        await get_status(b, job_id)
    except JobNotFoundError:
        if await get_result(b, job_id) is None:
            raise JobNotFoundError(f"no job with id {job_id!r} on {client.url} "
                                   "(never submitted, or its records expired)") from None
    fut = JobFuture(job_id, client)
    await get_watch(client).register([fut], fetch=True)
    return fut


def _check_id(job_id: Any) -> str:
    if isinstance(job_id, JobFuture):
        return job_id.job_id
    if not isinstance(job_id, str) or not job_id:
        raise TypeError(f"job() needs a job id string, not {type(job_id).__name__}: {job_id!r}")
    return job_id


def job(job_id: str, *, client: Client | None = None) -> JobFuture:
    """A :class:`JobFuture` for an existing job (e.g. after a kernel restart); unknown id: ``JobNotFoundError``."""
    c = client or default_client()
    return run_sync(_job_on_loop(c, _check_id(job_id)))


async def job_async(job_id: str, *, client: Client | None = None) -> JobFuture:
    """Async form of :func:`job`."""
    c = client or default_client()
    return await run_async(_job_on_loop(c, _check_id(job_id)))
