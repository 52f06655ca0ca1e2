"""A consumer for one pass over part of a stream, deleted as soon as the pass ends.

nats-py's ephemeral ``pull_subscribe`` leaves its consumer on the server until
its inactivity threshold runs out. nats-server 2.15 allows a stream 1,000
consumers unless the stream names a limit of its own, so listing the workers in a
loop (a bucket scan each time) made a later scan fail with "maximum consumers
limit reached". Here the consumer is deleted when the pass ends, even when the
pass is cancelled while its consumer is being made; its inactivity threshold
only cleans up after a reader whose connection died mid-pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, AsyncIterator

import nats.errors
from nats.js import api
from nats.js.client import JetStreamContext

from .layout import consumer_delete_api_subject

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["one_pass"]

log = logging.getLogger("naq_nb.core")


@contextlib.asynccontextmanager
async def one_pass(
    broker: "Broker",
    stream: str,
    subject: str,
    *,
    deliver_policy: api.DeliverPolicy = api.DeliverPolicy.ALL,
    inactive_threshold: float = 60.0,
) -> AsyncIterator[tuple[JetStreamContext.PullSubscription, api.ConsumerInfo]]:
    """A pull subscription on a new consumer of ``stream``'s ``subject`` (no acks), and the consumer's
    info at its creation (``num_pending``: how many messages the pass will see). The consumer is
    deleted on the way out, whatever ends the pass."""
    cfg = api.ConsumerConfig(
        filter_subject=subject,
        deliver_policy=deliver_policy,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=inactive_threshold,
        mem_storage=True,
    )
    making = asyncio.ensure_future(broker.js.add_consumer(stream, cfg))
    try:
        info = await asyncio.shield(making)
    except asyncio.CancelledError:
        # The server may make it all the same: delete it once its name is known.
        making.add_done_callback(lambda done: _delete_made(broker, stream, done))
        raise
    try:
        sub = await broker.js.pull_subscribe_bind(consumer=info.name, stream=stream)
        try:
            yield sub, info
        finally:
            with contextlib.suppress(nats.errors.Error):  # closed or draining: it went with the connection
                await sub.unsubscribe()
    finally:
        await _delete(broker, stream, info.name)


async def _delete(broker: "Broker", stream: str, consumer: str) -> None:
    # Sent, not waited for: a reply that never comes (no permission for it, a connection going
    # down) must not hold up the pass; a consumer left behind goes at its inactivity threshold.
    try:
        await broker.nc.publish(consumer_delete_api_subject(stream, consumer), b"")
    except nats.errors.Error as exc:
        log.debug("consumer %s of %s left to its inactivity threshold: %s", consumer, stream, exc)


def _delete_made(broker: "Broker", stream: str, making: "asyncio.Future[api.ConsumerInfo]") -> None:
    if not making.cancelled() and making.exception() is None:
        asyncio.ensure_future(_delete(broker, stream, making.result().name))
