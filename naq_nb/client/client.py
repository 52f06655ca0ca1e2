"""The client: a connection owned by the background loop, with sync and async calls.

``Client(url, **nats_options)`` connects lazily on first use. Every method
``m`` has an awaitable form ``await client.m(...)`` and a blocking form
``client.m_sync(...)``; both run on naq_nb's loop thread, so they behave the
same in a script, inside Jupyter's running loop and from worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Sequence

from ..core.broker import Broker
from ..core.failed import FailedEntry, list_failed, requeue_failed
from ..core.job import Job, JobOptions
from ..core.queue import Queue as CoreQueue, cancel_job, get_status, make_job
from ..core.records import ResultRecord
from ..core.registry import WorkerRecord, list_workers
from ..core.results import wait_for_result
from ..core.settings import Settings, redact_url
from .loop import on_exit, run_sync
from .twins import blocking, on_loop

log = logging.getLogger("naq_nb.client")

__all__ = ["Client", "get_client", "default_client", "set_default_client", "close_all_clients", "set_session_default"]


class Client:
    """A NATS connection for enqueuing, watching and managing jobs."""

    def __init__(self, nats_url: str | None = None, *, settings: Settings | None = None,
                 **nats_options: Any) -> None:
        self.settings = (settings or Settings.from_env()).with_(**({"nats_url": nats_url} if nats_url else {}))
        self.nats_options = nats_options
        self._broker: Broker | None = None
        self._connecting: asyncio.Future | None = None

    @property
    def url(self) -> str:
        """The server URL(s) for display: credentials in it are shown as ``***``."""
        return redact_url(self.settings.nats_url)

    async def broker(self) -> Broker:
        """The connected :class:`Broker` (call on the loop thread only)."""
        if self._broker is not None and not self._broker.nc.is_closed:
            return self._broker
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(Broker.connect(settings=self.settings, **self.nats_options))
        try:
            b = await asyncio.shield(self._connecting)
        finally:
            if self._connecting.done() and self._connecting.exception() is not None:
                self._connecting = None
        await b.ensure_layout()
        self._broker = b
        return b

    # --- jobs --------------------------------------------------------------
    @on_loop
    async def enqueue_jobs(self, jobs: list[Job]) -> list[Job]:
        """Publish prepared jobs (pipelined)."""
        b = await self.broker()
        return await CoreQueue(b).enqueue_jobs(jobs)

    enqueue_jobs_sync = blocking(enqueue_jobs)

    def make_job(self, fn: Callable[..., Any] | str, args: Sequence = (), kwargs: dict | None = None,
                 options: JobOptions | None = None) -> Job:
        """Build (and check) a job without sending it; the default queue comes from settings."""
        return make_job(fn, args, kwargs, options, queue=self.settings.default_queue)

    @on_loop
    async def status(self, job_id: str) -> dict:
        """The job's status record (raises JobNotFoundError)."""
        return await get_status(await self.broker(), job_id)

    status_sync = blocking(status)

    @on_loop
    async def result_record(self, job_id: str, timeout: float | None = None) -> ResultRecord:
        """Wait for the job's result record (push: a subscription on the result key)."""
        return await wait_for_result(await self.broker(), job_id, timeout)

    result_record_sync = blocking(result_record)

    @on_loop
    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's return value; raises its exception (original type where possible)."""
        rec = await wait_for_result(await self.broker(), job_id, timeout)
        return rec.unwrap()

    result_sync = blocking(result)

    @on_loop
    async def cancel(self, job_id: str, sequence: int | None = None) -> bool:
        """Cancel a job that has not ended; False if it already had."""
        return await cancel_job(await self.broker(), job_id, sequence)

    cancel_sync = blocking(cancel)

    @on_loop
    async def purge(self, queue: str | None = None) -> int:
        """Drop every queued job of ``queue``; returns how many."""
        return await CoreQueue(await self.broker(), queue).purge()

    purge_sync = blocking(purge)

    @on_loop
    async def queue_size(self, queue: str | None = None) -> int:
        return await CoreQueue(await self.broker(), queue).count()

    queue_size_sync = blocking(queue_size)

    @on_loop
    async def workers(self) -> list[WorkerRecord]:
        """Live workers from their heartbeats."""
        return await list_workers(await self.broker())

    workers_sync = blocking(workers)

    @on_loop
    async def failed(self, queue: str | None = None, limit: int = 1000) -> list[FailedEntry]:
        """Jobs in the failed stream (out of retries, or undecodable)."""
        return await list_failed(await self.broker(), queue, limit)

    failed_sync = blocking(failed)

    @on_loop
    async def requeue(self, ref: str | int) -> str:
        """Put a failed job back on its queue (by job id or failed sequence)."""
        return await requeue_failed(await self.broker(), ref)

    requeue_sync = blocking(requeue)

    @on_loop
    async def close(self) -> None:
        if self._broker is not None:
            b, self._broker = self._broker, None
            await b.close()

    close_sync = blocking(close)

    def __await__(self) -> Any:
        # naq's `c = await connect(url)`: nq.connect() has connected already; awaiting gives the client back.
        return self._itself()

    def _itself(self) -> Any:
        return self
        yield  # a generator that finishes at once with the client as its value

    def __repr__(self) -> str:
        return f"<naq_nb.Client {self.url}>"


_clients: dict[tuple, Client] = {}
_clients_lock = threading.Lock()
_session_default: Client | None = None


def set_session_default(client: Client | None) -> None:
    """The client that calls without a URL use (set by ``nq.connect`` / ``nq.local``)."""
    global _session_default
    _session_default = client


def default_client() -> Client:
    """The session's client: the one set by ``nq.connect`` / ``nq.local()``, else the shared one
    for ``NAQ_NATS_URL``."""
    return get_client()


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the default of the ``nq.*`` calls (None: back to ``NAQ_NATS_URL``)."""
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"set_default_client() needs a naq_nb Client or None, not {type(client).__name__}")
    set_session_default(client)


def get_client(nats_url: str | None = None, **nats_options: Any) -> Client:
    """A shared client per (URL, options), created on first use.

    Without a URL or options it is the session's default client when ``nq.connect``
    or ``nq.local`` set one, so naq-style calls in a notebook reach the local cluster.
    """
    if nats_url is None and not nats_options and _session_default is not None:
        return _session_default
    settings = Settings.from_env()
    url = nats_url or settings.nats_url
    key = (url, tuple(sorted((k, repr(v)) for k, v in nats_options.items())))
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = _clients[key] = Client(url, settings=settings, **nats_options)
        return c


async def _close_all() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for c in clients:
        try:
            await c.close()
        except Exception as exc:  # closing them all: one that fails must not keep the others open
            log.debug("closing %r: %s", c, exc)


def close_all_clients() -> None:
    """Close every shared connection (naq's ``close_sync_connections``)."""
    run_sync(_close_all())


on_exit(_close_all)
