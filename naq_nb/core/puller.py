"""A continuous pull feed on one durable consumer.

nats-py's ``fetch(batch)`` waits for the whole batch or the timeout once a long
poll has begun, which would hold the first job of a quiet queue for seconds.
This feed keeps one pull request outstanding for the credit the worker wants
(free slots plus a small prefetch) and hands every message over the moment it
arrives. Delivered messages carry the stream subject, not the request's reply
subject, so they cannot be told apart by request; keeping a single request in
flight makes the credit exact, and the server's 408 status at expiry releases
what was left of it. A request that ends, expired or spent, calls ``on_ended``
at once, so the worker asks again for what is free then: slots freed while a
request was open are not in it, and a job published meanwhile would otherwise
wait for the periodic top-up (up to a second). A job that waits for a job it
enqueued waited so whenever its own message spent the request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .inbound import subscribe_inline

__all__ = ["PullFeed"]

_STATUS = "Status"


class PullFeed:
    """One outstanding pull request at a time; ``on_msg`` gets each job message."""

    def __init__(
        self,
        nc: NATS,
        api_subject: str,
        on_msg: Callable[[Msg], None],
        *,
        expires: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_ended: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.nc = nc
        self.api_subject = api_subject
        self.on_msg = on_msg
        self.expires = expires
        self.clock = clock
        self.on_ended = on_ended
        self.on_lost = on_lost
        self._inbox = nc.new_inbox()
        self._ids = itertools.count(1)
        self._current: list | None = None  # [rid, remaining, expires_at]
        self._sub: Subscription | None = None
        self.closed = False

    @property
    def credit(self) -> int:
        return self._current[1] if self._current else 0

    async def start(self) -> None:
        self._sub = await subscribe_inline(self.nc, f"{self._inbox}.*", self._dispatch)

    async def want(self, n: int) -> bool:
        """Request ``n`` messages unless a request is still open; True if one was sent."""
        self.expire(self.clock())
        if self._current is not None or n <= 0 or self.closed:
            return False
        rid = str(next(self._ids))
        self._current = [rid, n, self.clock() + self.expires + 2.0]
        req = {"batch": n, "expires": int(self.expires * 1e9)}
        await self.nc.publish(self.api_subject, json.dumps(req).encode(), reply=f"{self._inbox}.{rid}")
        return True

    def expire(self, now: float) -> None:
        """Forget a request the server has surely expired (in case its status was lost)."""
        if self._current is not None and self._current[2] < now:
            self._current = None

    def reset(self) -> None:
        """After a reconnect the server forgot our request; so do we."""
        self._current = None

    def _dispatch(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status and not msg.reply:
            # 408 request expired, 409 consumer deleted / max waiting, 404 no messages.
            rid = msg.subject.rsplit(".", 1)[-1]
            if status != "100" and self._current is not None and self._current[0] == rid:
                self._current = None
                # Only an expiry asks again at once: a 409 (consumer deleted, too many waiting
                # requests) would come straight back, so those wait for the periodic top-up.
                if status == "408":
                    self._ended()
                elif self.on_lost is not None and _consumer_gone(status, msg.headers or {}):
                    self.on_lost()
            return
        cur = self._current
        if cur is not None:
            cur[1] -= 1
            if cur[1] <= 0:
                self._current = None
        self.on_msg(msg)
        if cur is not None and cur[1] <= 0:  # spent: asked again after on_msg counted this message as held
            self._ended()

    def _ended(self) -> None:
        if self.on_ended is not None and not self.closed:
            asyncio.ensure_future(self.on_ended())

    async def close(self) -> None:
        self.closed = True
        self._current = None
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass  # closed or draining connection: the subscription is gone with it


def _consumer_gone(status: str, headers: dict[str, str]) -> bool:
    """A pull answered "no such consumer": 503 (nobody serves its API subject, e.g. after the
    stream was deleted) or 409 "Consumer Deleted"."""
    return status == "503" or (status == "409" and "deleted" in headers.get("Description", "").lower())
