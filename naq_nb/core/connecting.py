"""Making a first connection: giving up at once on a refusal, and one line saying why it failed.

What :meth:`.Broker.connect` needs beside nats-py: nats-py retries a refused
connect (bad credentials, an untrusted certificate) until its timeout and then
names only the timeout; these helpers stop at the refusal and name it.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import socket
import ssl
from typing import Any, Awaitable, Callable, Mapping

import nats.errors
from nats.aio.client import Client as NATS

from .settings import redact_url

__all__ = ["is_refusal", "connect_unless_refused", "connect_failure", "fail_pending_on_loss", "check_connect_options"]


def is_refusal(e: BaseException) -> bool:
    low = f"{type(e).__name__}: {e}".lower()
    return (
        isinstance(e, (nats.errors.AuthorizationError, ssl.SSLCertVerificationError))
        or "authorization violation" in low
        or "certificate verify failed" in low
    )


async def connect_unless_refused(connecting: Awaitable[NATS], refused: asyncio.Event, timeout: float) -> NATS:
    """``await connecting`` within ``timeout``, but give up at once when the server refused us."""
    task = asyncio.ensure_future(connecting)
    waiter = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # its outcome is replaced by the refusal or the timeout
        pass
    raise asyncio.TimeoutError()


def connect_failure(servers: list[str], timeout: float, exc: BaseException, seen: list[BaseException]) -> str:
    """One line saying why a first connect failed: credentials, TLS, or no server at all."""
    where = ", ".join(redact_url(s) for s in servers)
    for e in [exc, *reversed(seen)]:  # nats-py retries auth and TLS failures; the error callback saw them
        low = f"{type(e).__name__}: {e}".lower()
        if (
            isinstance(e, (nats.errors.AuthorizationError, ssl.SSLError))
            or "authorization" in low
            or "certificate verify failed" in low
        ):
            exc = e
            break
    unknown = next((e for e in [exc, *reversed(seen)] if isinstance(e, socket.gaierror)), None)
    if unknown is not None:  # (waited for all the same: a name may resolve once its service is up)
        return (
            f"cannot connect to NATS at {where} within {timeout:g}s: a host name does not resolve "
            f"({unknown.strerror or unknown}); check the URL (NAQ_NATS_URL, --nats-url)"
        )
    text = f"{type(exc).__name__}: {exc}" if str(exc) else "no answer"
    if any(isinstance(e, ConnectionRefusedError) for e in [exc, *seen]):
        text = "connection refused: nothing listens there"  # (waited all the same: a server may be starting)
    low = text.lower()
    if isinstance(exc, nats.errors.AuthorizationError) or "authorization" in low or "authentication" in low:
        return f"cannot connect to NATS at {where}: authorization violation: check user/password/token or --creds"
    if isinstance(exc, ssl.SSLCertVerificationError) or "certificate verify failed" in low:
        return (
            f"cannot connect to NATS at {where}: TLS certificate verify failed: "
            f"{getattr(exc, 'verify_message', '') or exc} (give the CA with --tls-ca / NAQ_TLS_CA)"
        )
    if isinstance(exc, ssl.SSLError) or "tls" in low or "ssl" in low:
        return f"cannot connect to NATS at {where}: TLS error: {exc}"
    return (
        f"cannot connect to NATS at {where} within {timeout:g}s ({text}); is a nats-server running "
        "there? (in a notebook, nq.local() starts one with workers; in a terminal, `naq server`)"
    )


def fail_pending_on_loss(opts: dict, holder: list) -> None:
    """Wrap the disconnected/closed callbacks in ``opts``: acks of publishes in flight are lost with
    the connection, so their waiters fail at once (``holder`` gets the broker once it exists)."""
    user_disc, user_closed = opts.pop("disconnected_cb", None), opts.pop("closed_cb", None)

    async def _disconnected() -> None:
        if holder:
            holder[0].fail_pending("dropped")
        if user_disc:
            await user_disc()

    async def _closed() -> None:
        if holder:
            holder[0].fail_pending("closed")
        if user_closed:
            await user_closed()

    opts["disconnected_cb"], opts["closed_cb"] = _disconnected, _closed


@functools.lru_cache(maxsize=1)
def _connect_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(NATS.connect).parameters) - {"self"}


def check_connect_options(options: Mapping[str, Any], own: Callable[..., Any] | None = None) -> None:
    """Refuse a keyword nats-py's ``connect()`` does not take, at the call that gave it: passed on, it
    would fail only at the first connect, far from the typo. ``own``: the caller (a class or function)
    whose own keyword names are offered too when one is near."""
    known = _connect_parameters()
    for k in options:
        if k not in known:
            names = [*(inspect.signature(own).parameters if own is not None else ()), *known]
            near = difflib.get_close_matches(k, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TypeError(f"unknown NATS connect option {k!r} (extra keywords go to nats-py's connect()){hint}")
