"""naq's remaining top-level names: status enums, ``RetryDelayType``, raw NATS connections, ``disconnect``.

The enums keep naq's member names, with naq_nb's values where the two differ
(naq's ``COMPLETED`` is the status ``"succeeded"`` here, ``PENDING`` is
``"queued"``). They are ``str`` enums, so ``JOB_STATUS.COMPLETED ==
JobStatus.SUCCEEDED == "succeeded"`` and a status record's ``"status"``
compares equal to them.

``get_nats_connection`` returns a plain nats-py connection bound to the
*calling* event loop (one per loop and URL, reused), for code that talks to
NATS itself. naq_nb's own calls never use it: they run on naq_nb's loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from enum import Enum
from typing import Any, Sequence, Union

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from ..core.errors import NaqConnectionError
from ..core.settings import Settings
from . import shared
from .loop import on_loop_close

__all__ = [
    "JOB_STATUS",
    "WORKER_STATUS",
    "SCHEDULED_JOB_STATUS",
    "RETRY_STRATEGY",
    "RetryDelayType",
    "get_nats_connection",
    "get_jetstream_context",
    "close_nats_connection",
    "disconnect",
    "default_nats_url",
]

log = logging.getLogger("naq_nb.client")

RetryDelayType = Union[int, float, Sequence[Union[int, float]]]


class JOB_STATUS(str, Enum):
    """naq's job status names. naq_nb also has ``waiting`` (on dependencies)."""

    PENDING = "queued"
    WAITING = "waiting"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRY = "retrying"
    COMPLETED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"  # naq's name; a job never has it here (a *schedule* is paused)

    def __str__(self) -> str:
        return self.value


class WORKER_STATUS(str, Enum):
    """The ``state`` of a worker's heartbeat record. A worker reports ``idle`` once started,
    so ``STARTING`` (``"created"``) is only seen on a Worker object before it runs."""

    STARTING = "created"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class SCHEDULED_JOB_STATUS(str, Enum):
    """The ``status`` of a schedule's row (``list_scheduled``). ``FINISHED``: a one-shot that fired,
    or a repeat count used up. ``FAILED``/``CANCELLED`` are naq's names: a cancelled schedule is
    deleted here, and a schedule never fails (its firings are jobs, which can)."""

    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class RETRY_STRATEGY(str, Enum):
    """naq's ``retry_strategy=`` values: ``linear`` = the same delay each time, ``exponential`` = doubling."""

    LINEAR = "linear"
    EXPONENTIAL = "exponential"

    def __str__(self) -> str:
        return self.value


def default_nats_url() -> str:
    """``NAQ_NATS_URL`` now (naq's ``DEFAULT_NATS_URL``, read when the name is imported)."""
    return Settings.from_env().nats_url


# loop -> {url: connection}; a loop that is gone takes its connections with it.
_raw: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, NATS]]" = weakref.WeakKeyDictionary()


async def get_nats_connection(url: str | None = None, prefer_thread_local: bool = False, **nats_options: Any) -> NATS:
    """A nats-py connection to ``url`` (default ``NAQ_NATS_URL``) on the calling loop, reused per loop and URL.

    ``prefer_thread_local`` is accepted for naq's signature: a connection here is
    already bound to its loop, hence to its thread.
    """
    settings = Settings.from_env(nats_url=url)
    pool = _raw.setdefault(asyncio.get_running_loop(), {})
    nc = pool.get(settings.nats_url)
    if nc is not None and not nc.is_closed:
        return nc
    servers = settings.servers
    opts = {**dict(settings.nats_options), **nats_options}
    opts.setdefault("connect_timeout", min(2.0, settings.connect_timeout))
    opts.update(settings.ping_options(opts))
    try:
        nc = await asyncio.wait_for(nats.connect(servers=servers, **opts), settings.connect_timeout)
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        raise NaqConnectionError(
            f"cannot connect to NATS at {settings.nats_url} ({type(exc).__name__}: {exc})"
        ) from None
    if not pool:  # the loop's first: its connections close when asyncio.run ends it (naq's callers never do)
        await on_loop_close(lambda: _close_pool(pool))
    pool[settings.nats_url] = nc
    return nc


async def _close_pool(pool: dict[str, NATS]) -> None:
    """At the end of the loop: each connection closed, not drained (its reading task is gone already);
    left open, each run of ``asyncio.run(...)`` kept one socket until the garbage collector came."""
    conns = list(pool.values())
    pool.clear()
    for nc in conns:
        if not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except (asyncio.TimeoutError, OSError, RuntimeError, nats.errors.Error) as exc:
                log.debug("closing a raw connection at its loop's end: %r", exc)


async def get_jetstream_context(nc: NATS | None = None, prefer_thread_local: bool = False) -> JetStreamContext:
    """The JetStream context of ``nc`` (default: :func:`get_nats_connection`'s)."""
    return (nc or await get_nats_connection()).jetstream()


async def close_nats_connection(url: str | None = None) -> None:
    """Close the calling loop's connections from :func:`get_nats_connection` (to ``url``, or all)."""
    pool = _raw.get(asyncio.get_running_loop(), {})
    urls = [Settings.from_env(nats_url=url).nats_url] if url else list(pool)
    for u in urls:
        nc = pool.pop(u, None)
        if nc is not None and not nc.is_closed:
            await nc.drain()


class _Done:
    """An already finished awaitable: ``disconnect()`` works called or awaited."""

    def __await__(self) -> Any:
        return iter(())


def disconnect() -> _Done:
    """Close naq_nb's shared connections and the session's client (naq: ``await disconnect()``;
    a plain call works too). Later calls reconnect on demand."""
    shared.close_all_clients()
    default = shared.session_default()
    if default is not None:
        default.close_sync()
    return _Done()
