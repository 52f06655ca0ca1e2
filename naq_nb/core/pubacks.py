"""JetStream publish acknowledgements awaited on one connection.

A JetStream publish names a reply subject; the server's acknowledgement comes
back there. One connection subscribes once to ``<inbox>.*`` and hands each
acknowledgement to the future registered under its token; one timer fails the
publishes that waited too long (a timer per publish was a large part of a
publish's cost), and a lost connection fails all of them at once.

A publish may also name a reply subject another subscriber hears too
(:meth:`PubAcks.listen`, ``head``): a worker's result and status writes are
acknowledged to the job's client as well, in the same message.

The publish itself may be made on another connection (:meth:`PubAcks.reserve`,
:meth:`PubAcks.expect`, from any thread): an async caller's loop sends a job on
its own connection, and the background loop, which never blocks, receives its
acknowledgements. The registry is shared between threads, so it is changed
under a lock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
from typing import Any, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import api

from .errors import NaqConnectionError, PublishTimeoutError
from .inbound import subscribe_inline

__all__ = ["PubAcks"]


class PubAcks:
    """The acknowledgements one connection waits for: ``token -> (future, what, deadline, bound)``."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = ""
        self._sub: Any = None
        #: Names this connection in reply subjects shared with another listener (:meth:`listen`).
        self.id = secrets.token_hex(6)
        self._shared: dict[str, bool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._acks: dict[str, tuple[asyncio.Future, str, float, float]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        #: Called when a publish found no stream (its broker then checks the layout again).
        self.on_no_stream: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._acks)

    async def listen(self, pattern: str, probe: str, bound: float) -> bool:
        """Also take acknowledgements on ``pattern`` (once), subjects whose last token is ours: the
        ``head`` of :meth:`reply` must fall under it. True once a message sent to ``probe``, a
        subject under it, came back within ``bound`` seconds: an ACL may forbid this connection
        to subscribe or publish there, and the server says so only in an error nobody awaits.
        On this connection's loop."""
        if pattern in self._shared:
            return self._shared[pattern]
        came = asyncio.get_running_loop().create_future()

        def on_msg(msg: Any) -> None:
            if msg.subject != probe:
                self._on_ack(msg)
            elif not came.done():
                came.set_result(True)

        sub = await subscribe_inline(self.nc, pattern, on_msg)
        try:
            await self.nc.publish(probe, b"")
            await asyncio.wait_for(came, bound)
            self._shared[pattern] = True
        except (asyncio.TimeoutError, nats.errors.Error):
            self._shared[pattern] = False
            await sub.unsubscribe()
        return self._shared[pattern]

    async def reply(self, label: str, bound: float, head: str | None = None) -> tuple[str, asyncio.Future]:
        """A reply subject for a publish on this connection, and the future its acknowledgement
        resolves (or fails within ``bound`` seconds). On this connection's loop. ``head``: the
        subject is ``head.<token>``, under a pattern given to :meth:`listen`."""
        if self._sub is None:
            self.prefix = self.nc.new_inbox()
            self._sub = await subscribe_inline(self.nc, f"{self.prefix}.*", self._on_ack)
            self._loop = asyncio.get_running_loop()
        loop = self._loop
        assert loop is not None
        token = str(next(self._ids))
        fut: asyncio.Future = loop.create_future()
        deadline = loop.time() + bound
        with self._lock:
            self._acks[token] = (fut, label, deadline, bound)
        if self._expiry is None or deadline < self._expiry.when():
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry = loop.call_at(deadline, self._expire)
        return f"{head or self.prefix}.{token}", fut

    def drop(self, reply: str) -> None:
        """The publish of ``reply`` was not sent: nothing to wait for."""
        with self._lock:
            self._acks.pop(reply.rsplit(".", 1)[-1], None)

    def reserve(self) -> tuple[str, str] | None:
        """From any thread: ``(token, reply subject)`` for a publish made on another connection whose
        acknowledgement comes here (register it with :meth:`expect` before sending); None when this
        connection can't take it (no publish made here yet, or not connected)."""
        if self._sub is None or self._loop is None or not self.nc.is_connected:
            return None
        token = str(next(self._ids))
        return token, f"{self.prefix}.{token}"

    def expect(self, token: str, label: str, bound: float, on_ack: Callable[[asyncio.Future], None]) -> None:
        """From any thread: ``on_ack(fut)`` runs on this connection's loop once the acknowledgement
        for ``token`` comes, fails, or is ``bound`` seconds late."""
        loop = self._loop
        assert loop is not None  # reserve() gave the token
        fut = loop.create_future()
        fut.add_done_callback(on_ack)  # added before anyone can resolve it
        with self._lock:
            self._acks[token] = (fut, label, loop.time() + bound, bound)
            armed = self._expiry is not None
        if not armed:  # (an expiry running now either sees the entry or re-arms for it)
            loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if self._expiry is None:
            self._expire()

    def _expire(self) -> None:
        """Fail the publishes past their deadline; wake again at the next deadline."""
        loop = asyncio.get_running_loop()
        now, nxt = loop.time(), None
        late = []
        with self._lock:
            self._expiry = None
            for token, (fut, label, deadline, bound) in list(self._acks.items()):
                if fut.done():  # cancelled by its waiter
                    del self._acks[token]
                elif deadline <= now:
                    del self._acks[token]
                    late.append((fut, label, bound))
                elif nxt is None or deadline < nxt:
                    nxt = deadline
            if nxt is not None:
                self._expiry = loop.call_at(nxt, self._expire)
        for fut, label, bound in late:
            fut.set_exception(
                PublishTimeoutError(
                    f"no acknowledgement from JetStream for {label} within {bound:g}s (server down or overloaded?)"
                )
            )

    def fail_all(self, why: str) -> None:
        """Fail every publish still waiting (the connection dropped or closed). On the loop."""
        with self._lock:
            acks, self._acks = self._acks, {}
        for fut, label, _deadline, _bound in acks.values():
            if not fut.done():
                fut.set_exception(
                    NaqConnectionError(
                        f"the connection {why} before JetStream acknowledged {label}; it may or may not be stored"
                    )
                )

    def _on_ack(self, msg: Any) -> None:
        with self._lock:
            entry = self._acks.pop(msg.subject.rsplit(".", 1)[-1], None)
        if entry is None or entry[0].done():
            return
        fut = entry[0]
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(nats.js.errors.NoStreamResponseError())
            if self.on_no_stream is not None:
                self.on_no_stream()
            return
        try:
            resp = json.loads(msg.data)
            if "error" in resp:
                nats.js.errors.APIError.from_error(resp["error"])  # raises the specific error class
                raise nats.js.errors.APIError(**resp["error"])
            # Built directly: PubAck.from_response walks the dataclass fields on every call.
            fut.set_result(
                api.PubAck(
                    stream=resp["stream"], seq=resp["seq"], domain=resp.get("domain"), duplicate=resp.get("duplicate")
                )
            )
        except Exception as exc:  # the server's error (or a garbled answer) goes to the waiter
            fut.set_exception(exc)
