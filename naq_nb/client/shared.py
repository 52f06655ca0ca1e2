"""The shared clients: one per (URL, options) made on first use, the session's default (set by
``nq.connect`` / ``nq.local``), and closing them all; the exit hooks of every client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..core import notices
from ..core.errors import JobNotStoredError, NaqConnectionError
from ..core.settings import Settings
from .client import Client, _every_client, log
from .loop import on_exit, run_sync

__all__ = [
    "get_client",
    "default_client",
    "set_default_client",
    "close_all_clients",
    "set_session_default",
    "end_session_default",
    "session_default",
    "say_loudly",
]

_clients: dict[tuple, Client] = {}
_clients_lock = threading.Lock()
_session_default: Client | None = None
_session_ended: str | None = None  # why calls without a URL have no server now (their nq.local() stopped)


def set_session_default(client: Client | None) -> None:
    """The client that calls without a URL use (set by ``nq.connect`` / ``nq.local``)."""
    global _session_default, _session_ended
    _session_default, _session_ended = client, None


def end_session_default(client: Client, why: str) -> None:
    """``client`` no longer serves the session (its ``nq.local()`` stopped): calls without a URL
    raise ``why`` until ``nq.local()`` or ``nq.connect()`` names a server again. Falling back to
    ``NAQ_NATS_URL`` there waited out a connect timeout, or sent the jobs to whatever listened on
    the default port, without a word about the stopped cluster."""
    global _session_default, _session_ended
    if _session_default is client:
        _session_default, _session_ended = None, why


def session_default() -> Client | None:
    """The client set by ``nq.connect`` / ``nq.local``, if any (no shared one is made)."""
    return _session_default


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
    if nats_url is None and not nats_options:
        if _session_default is not None:
            return _session_default
        if _session_ended is not None:
            raise NaqConnectionError(_session_ended)
    # Reading the environment costs ~0.1-0.2 ms: with a URL given, only a new client needs it.
    settings = None if nats_url else Settings.from_env()
    url = nats_url or settings.nats_url  # type: ignore[union-attr]
    key = (url, tuple(sorted((k, repr(v)) for k, v in nats_options.items())))
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = _clients[key] = Client(url, settings=settings or Settings.from_env(), **nats_options)
        return c


def say_loudly(message: str) -> None:
    """Log ``message`` as an error, and to stderr when no handler shows it (the package's NullHandler
    silences Python's last resort): a script with no logging set up must still hear of lost jobs."""
    notices.say_loudly(log, message)


async def flush_all_at_exit() -> None:
    """Every client (shared or not): enqueues still in flight are settled, failures logged. The
    clients drain side by side, within one bound: the exit hook's own is 5 s for them all."""
    clients = list(_every_client)
    drained = await asyncio.gather(*(asyncio.wait_for(c._stores.drain(), 4.0) for c in clients), return_exceptions=True)
    for c, outcome in zip(clients, drained):
        if isinstance(outcome, asyncio.TimeoutError):
            say_loudly(
                f"{c._stores.in_flight} enqueued job(s) of {c!r} were still not acknowledged at exit: "
                "they may not be stored"
            )
        elif isinstance(outcome, Exception):
            say_loudly(f"the exit check of {c!r}'s enqueues failed: {type(outcome).__name__}: {outcome}")
        try:
            c._stores.raise_unreported()
        except JobNotStoredError as exc:  # at exit nobody can catch it: say it loudly
            say_loudly(str(exc))


async def _close_all() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for c in clients:
        try:
            await c.close()
        except JobNotStoredError as exc:  # at exit nobody can catch it: say it loudly
            say_loudly(str(exc))
        except Exception as exc:  # closing the others anyway
            log.debug("closing %r failed: %s", c, exc)


def close_all_clients() -> None:
    """Close every shared connection (naq's ``close_sync_connections``)."""
    run_sync(_close_all())


on_exit(_close_all)
on_exit(flush_all_at_exit)  # hooks run last-registered first: this one before the closes
