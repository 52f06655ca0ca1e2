"""Subscriptions whose messages are handled as nats-py's reader parses them.

nats-py hands each message of a callback subscription to a queue, and a task of
the subscription's own takes it from there and calls the callback: one more
loop turn (a future, a task step) before anything happens, on every message.
naq_nb's hot subscriptions (a worker's job feed, JetStream acknowledgements, a
client's result pushes) only record the message and wake whoever waits, so
:func:`subscribe_inline` calls their handler right where the message is parsed.

A handler must be quick, must not block and must not raise (what it raises is
logged, and the connection reads on). Where this nats-py has no pending queue to
stand in for, the subscription falls back to a plain callback one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["subscribe_inline"]

log = logging.getLogger("naq_nb.core")


class _Inline:
    """Stands in for a subscription's pending queue: a message put here goes to the handler at once.
    (The subscription's own task waits in :meth:`get` until it is unsubscribed.)"""

    __slots__ = ("sub", "handler")

    def __init__(self, sub: Subscription, handler: Callable[[Msg], None]) -> None:
        self.sub = sub
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # counted as pending just before: it is not kept
        try:
            self.handler(msg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # (a CancelledError too: it can't be the reader's own, the handler is sync)
            # The reader must go on: a handler's bug loses this message only.
            log.exception("handler of %s failed on a message to %s", self.sub.subject, msg.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def get(self) -> Msg:
        """Never returns: the subscription's own task waits here until it is unsubscribed."""
        return await asyncio.get_running_loop().create_future()

    async def join(self) -> None:  # a drain waits for nothing kept here
        return None


async def subscribe_inline(nc: NATS, subject: str, handler: Callable[[Msg], None]) -> Subscription:
    """``nc.subscribe(subject)`` with ``handler(msg)`` called as each message is parsed."""

    async def cb(msg: Msg) -> None:  # the fallback, and a message the subscription's task took before the swap
        handler(msg)

    sub = await nc.subscribe(subject, cb=cb)
    old = getattr(sub, "_pending_queue", None)
    if isinstance(old, asyncio.Queue) and hasattr(sub, "_pending_size"):
        sub._pending_queue = _Inline(sub, handler)  # type: ignore[assignment]
        # A subscribe that had to flush may have let messages in already: handled first, in order
        # (the subscription's task, waiting on the old queue, would take one and then wait forever).
        while not old.empty():
            sub._pending_queue.put_nowait(old.get_nowait())
    return sub
