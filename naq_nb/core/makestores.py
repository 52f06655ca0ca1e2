"""Making streams and stores on a server that may not be ready for them: a create tried again while
the server fails to make its store on disk (:func:`create_store`), and the store another process
made first read again until it answers (:func:`created_elsewhere`)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

import nats.js.errors

from .errors import ConfigurationError, NaqConnectionError

__all__ = ["create_store", "created_elsewhere", "STORE_RETRY_DELAYS", "CREATED_WAIT"]

_T = TypeVar("_T")

#: Pauses between tries of a create the server failed to store (about 1.5 s in all).
STORE_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
#: Seconds a store another process created just before us may read as not found (a cluster's).
CREATED_WAIT = 10.0


async def create_store(what: str, create: Callable[[], Awaitable[_T]]) -> _T:
    """``create()`` (a stream, bucket or object store), tried again while the server fails to make
    its store on disk; :class:`NaqConnectionError` naming ``what`` when it never does.

    Why: after an account's last stream is deleted (by hand, ``nats stream rm``, or a test's wipe),
    nats-server removes the empty streams folder in the background, and a create landing meanwhile fails with
    "error creating store for stream" (about 1 in 100 creates right after, nats-server 2.15). The
    same create succeeds a moment later. A store dir that is full or unwritable fails every try."""
    for delay in (*STORE_RETRY_DELAYS, None):
        try:
            return await create()
        except nats.js.errors.ServerError as exc:
            if "replicas" in (exc.description or ""):  # e.g. NAQ_REPLICAS=3 on a server that is no cluster
                raise ConfigurationError(
                    f"the server refused {what}: {exc.description} (NAQ_REPLICAS sets how many; a single server "
                    "takes 1)"
                ) from None
            if "creating store" not in (exc.description or ""):
                raise
            if delay is None:
                raise NaqConnectionError(
                    f"the server could not create the store for {what} in {len(STORE_RETRY_DELAYS) + 1} tries: "
                    "its store directory is full, unwritable or was removed (the server's log names the cause)"
                ) from exc
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the last try returns or raises


async def created_elsewhere(read: Callable[[], Awaitable[_T]]) -> _T:
    """``read()`` of a store another process created just before us (our create lost the race). On a
    cluster such a store reads as not found until its own group has a leader: two processes making
    the layout of a fresh 3-node cluster at once, one failed with "stream not found". Read again for
    up to :data:`CREATED_WAIT` seconds."""
    loop = asyncio.get_running_loop()
    end, delay = loop.time() + CREATED_WAIT, 0.05
    while True:
        try:
            return await read()
        except nats.js.errors.NotFoundError:
            if loop.time() + delay > end:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
