"""The ``nq.*`` calls of a notebook session: connect, submit, map, options, job.

A module-level default client serves them; ``nq.connect(url)`` or
``nq.local()`` sets it, otherwise it is made from ``NAQ_NATS_URL`` on first
use. Every call has a blocking form (works inside Jupyter's running loop too)
and an ``_async`` form awaitable from any event loop.

The function's keyword arguments all go to the function (a function with a
``timeout`` or ``queue`` parameter gets it); job options are given apart,
through :func:`options`, and are checked by name when ``options`` is called.
``options(delay=...)`` / ``options(at=...)`` run the job later (through the
scheduler, status ``scheduled`` until then). :func:`map` returns a
:class:`~naq_nb.client.group.JobGroup` (a list of futures with one live
display); ``gather`` / ``as_completed`` / ``wait`` live in :mod:`.group`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import weakref
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from ..core.broker import Broker
from ..core.errors import ConfigurationError, JobNotFoundError
from ..core.job import Job, JobOptions, func_name
from ..core.layout import validate_job_id
from ..core.queue import get_status
from ..core.results import get_result
from ..core.schedules import make_schedule, save_schedule
from ..core.settings import Settings
from ..core.timespec import after_delay, to_epoch
from ..core.withdraw import withdraw
from ..core.status import JobStatus, status_record
from .client import Client
from .scheduling import storing_schedule
from .shared import default_client, end_session_default, get_client, set_default_client
from .future import JobFuture, submit_jobs
from .group import JobGroup
from .loop import run_async
from .twins import blocking
from .watch import get_watch

__all__ = [
    "connect",
    "connect_async",
    "default_client",
    "set_default_client",
    "end_session_default",
    "submit",
    "submit_async",
    "map",
    "map_async",
    "options",
    "Submitter",
    "job",
    "job_async",
    "set_store_note",
    "store_note",
]

# client -> why an unknown id may be unknown there (set by nq.local() for a new or temporary store)
_store_notes: "weakref.WeakKeyDictionary[Client, str]" = weakref.WeakKeyDictionary()


def set_store_note(client: Client, note: str) -> None:
    """Attach ``note`` to the "no job with id ..." errors of ``client`` (empty: none)."""
    if note:
        _store_notes[client] = note
    else:
        _store_notes.pop(client, None)


def store_note(client: Client) -> str:
    """The note set by :func:`set_store_note` for ``client``, or ``""``."""
    return _store_notes.get(client, "")


def unknown_id_message(client: Client, what: str) -> str:
    """``no job with id 'x' on nats://...: never submitted, or its records expired`` plus the store note."""
    note = store_note(client)
    return f"{what} on {client.url}: " + (note if note else "never submitted there, or its records expired")


async def connect_async(url: str | None = None, **nats_options: Any) -> Client:
    """Connect to NATS at ``url`` (default ``NAQ_NATS_URL``) and make it the default client.

    ``nats_options`` go to nats-py unchanged (``user``/``password``, ``token``,
    ``user_credentials``, ``tls``, ...). The connection is checked now, within
    ``NAQ_CONNECT_TIMEOUT`` seconds; failure raises :class:`NaqConnectionError`.
    Calling it again with the same arguments returns the same client.
    """
    # The URL named here: a session whose nq.local() stopped refuses calls without one (get_client).
    client = get_client(url or Settings.from_env().nats_url, **nats_options)
    await run_async(client.broker())
    set_default_client(client)
    return client


connect = blocking(connect_async)


# --- submitting ---------------------------------------------------------------------
class Submitter:
    """Submits calls with fixed job options (and optionally a start time); made by :func:`options`."""

    def __init__(
        self,
        job_options: JobOptions | None = None,
        client: Client | None = None,
        when: float | Callable[[], float] | None = None,
    ) -> None:
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"options(client=...) needs a naq_nb Client or None, not {type(client).__name__}")
        self.job_options = job_options or JobOptions()
        self._client = client
        self._when = when  # epoch seconds (at=), or a function of now (delay=): None runs at once

    @property
    def client(self) -> Client:
        """The client jobs go to: the one given, else the session's default at call time."""
        return self._client or default_client()

    def options(self, **job_options: Any) -> "Submitter":
        """A copy with more options (checked now; unknown names raise ``TypeError``)."""
        when = _when(job_options, self._when)
        return Submitter(JobOptions.build(self.job_options, **job_options), self._client, when)

    def _jobs(self, client: Client, fn: Callable[..., Any] | str, calls: list[tuple[tuple, dict]]) -> list[Job]:
        o = self.job_options
        if len(calls) > 1 and (o.job_id or o.key):
            raise ConfigurationError("job_id / key name one job; they cannot be used with map()")
        return [client.make_job(fn, args, kwargs, o) for args, kwargs in calls]

    async def _publish(self, client: Client, jobs: list[Job]) -> list[JobFuture]:
        if self._when is None:
            return await submit_jobs(client, jobs)
        return await run_async(_schedule_jobs(client, jobs, self._when() if callable(self._when) else self._when))

    async def submit_async(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; returns its :class:`JobFuture` at once."""
        client = self.client
        return (await self._publish(client, self._jobs(client, fn, [(args, kwargs)])))[0]

    submit = blocking(submit_async)

    async def map_async(self, fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> JobGroup:
        """One job per ``fn(*items)`` over the zipped iterables, published pipelined; a :class:`JobGroup`."""
        client = self.client
        calls = _zip_calls(iterables)
        jobs = self._jobs(client, fn, calls)
        return self._group(await self._publish(client, jobs), calls, fn)

    map = blocking(map_async)

    def _group(self, futs: list[JobFuture], calls: list[tuple[tuple, dict]], fn: Callable[..., Any] | str) -> JobGroup:
        return JobGroup(futs, calls, fn if isinstance(fn, str) else func_name(fn), self.job_options.name)

    def __repr__(self) -> str:
        return f"<naq_nb.Submitter {self.job_options}>"


async def _schedule_jobs(client: Client, jobs: list[Job], when: float) -> list[JobFuture]:
    """Store each job as a one-shot schedule due at ``when``; futures follow it (``scheduled`` first)."""
    b = await client.broker()
    made = [make_schedule(j, b, when=when) for j in jobs]  # validated before anything is stored
    futs = [JobFuture(j.job_id, client, j) for j in jobs]
    for f, j in zip(futs, jobs):
        f._record = status_record(
            j.job_id,
            j.queue_name,
            JobStatus.SCHEDULED,
            func=j.function_name,
            name=j.options.name,
            due_at=when,
            attempts=0,
            updated_at=0,
        )
    watch = get_watch(client)
    await watch.register(futs, fetch=False)
    saving: list[Job] = []  # a cancel during a save may leave that one stored
    try:
        for (s, body), j in zip(made, jobs):
            saving.append(j)
            await client._ask(storing_schedule(s.id), functools.partial(save_schedule, s=s, body=body))
    except BaseException as exc:
        for f in futs:
            watch.unregister(f)
        if isinstance(exc, asyncio.CancelledError):  # a Ctrl-C: what is stored must not run later unseen
            await withdraw(b, saving, len(jobs), "a delayed submit", scheduled=True)
        raise
    return futs


def _when(opts: dict, current: float | Callable[[], float] | None) -> float | Callable[[], float] | None:
    """Pops ``delay`` / ``at`` from ``opts``: a fixed epoch time, a delay from the call, or ``current``."""
    delay, at = opts.pop("delay", None), opts.pop("at", None)
    if delay is not None and at is not None:
        raise ConfigurationError("give delay=... or at=..., not both")
    if delay is not None:
        secs = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(secs, bool) or not isinstance(secs, (int, float)):
            raise TypeError(f"delay must be seconds >= 0 or a timedelta, not {type(delay).__name__}: {delay!r}")
        if not 0 <= secs < math.inf:  # (NaN fails it too)
            raise ConfigurationError(f"delay must be seconds >= 0, a finite number, not {delay!r}")
        after_delay(float(secs), "delay", delay)  # (past the year 9999: refused here, naming the delay)
        return lambda: time.time() + float(secs)
    if at is not None:
        if not isinstance(at, (datetime, int, float)) or isinstance(at, bool):
            raise TypeError(f"at must be a datetime (naive = UTC) or epoch seconds, not {type(at).__name__}: {at!r}")
        return to_epoch(at, "at")
    return current


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
    ``depends_on`` (JobFutures or ids), ``result_ttl``, ``job_id``, ``key``, ``name``;
    ``delay`` (seconds or a timedelta, counted from each submit) or ``at`` (a
    datetime, naive = UTC, or epoch seconds) to run later through the scheduler.
    """
    when = _when(job_options, None)
    return Submitter(JobOptions.build(**job_options), client, when)


async def submit_async(fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobFuture:
    """Run ``fn(*args, **kwargs)`` on a worker (every keyword goes to ``fn``); returns a :class:`JobFuture`."""
    return await Submitter().submit_async(fn, *args, **kwargs)


submit = blocking(submit_async)


async def map_async(fn: Callable[..., Any] | str, /, *iterables: Iterable[Any]) -> JobGroup:
    """Like the builtin ``map`` (zip semantics), one job per call, published in one pipelined batch.

    Returns a :class:`~naq_nb.client.group.JobGroup`: a list of futures (index it, iterate it) with
    ``results()``, ``wait()``, ``as_completed()``, ``await``, and one live display in a notebook.
    """
    return await Submitter().map_async(fn, *iterables)


map = blocking(map_async)  # noqa: A001


# --- re-attaching -------------------------------------------------------------------------
async def _job_on_loop(client: Client, job_id: str) -> JobFuture:
    await client.wait_stored(job_id)  # submitted by this client a moment ago: its store may be in flight

    async def exists(b: Broker) -> None:
        try:
            await get_status(b, job_id)
        except JobNotFoundError:
            if await get_result(b, job_id) is None:
                raise JobNotFoundError(unknown_id_message(client, f"no job with id {job_id!r}")) from None

    await client._ask(f"looking up job {job_id}", exists)  # (an outage is named, as in every read)
    fut = JobFuture(job_id, client)
    await get_watch(client).register([fut], fetch=True)
    return fut


def _check_id(job_id: Any) -> str:
    if isinstance(job_id, JobFuture):
        return job_id.job_id
    if not isinstance(job_id, str):
        raise TypeError(f"job() needs a job id string, not {type(job_id).__name__}: {job_id!r}")
    return validate_job_id(job_id)  # an empty or malformed id says so (it read "not str: ''")


async def job_async(job_id: str, *, client: Client | None = None) -> JobFuture:
    """A :class:`JobFuture` for an existing job (e.g. after a kernel restart); unknown id: ``JobNotFoundError``."""
    c = client or default_client()
    return await run_async(_job_on_loop(c, _check_id(job_id)))


job = blocking(job_async)
