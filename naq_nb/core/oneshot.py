"""A consumer for one pass over part of a stream, deleted as soon as the pass ends.

nats-py's ways of reading a stream once (``ObjectStore.get``'s ordered consumer, an
ephemeral ``pull_subscribe``) leave their consumer on the server until its
inactivity threshold runs out. nats-server 2.15 allows a stream 1,000 consumers
unless the stream names a limit of its own, so a thousand such reads within that
window made the next one fail with "maximum consumers limit reached": reading
back a thousand offloaded results, or listing the workers in a loop. Here the
consumer is deleted when the pass ends; its inactivity threshold only cleans up
after a reader that died mid-pass.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, AsyncIterator

import nats.errors
from nats.js import api
from nats.js.client import JetStreamContext

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["one_pass"]


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
    info = await broker.js.add_consumer(stream, cfg)
    try:
        sub = await broker.js.pull_subscribe_bind(consumer=info.name, stream=stream)
        try:
            yield sub, info
        finally:
            with contextlib.suppress(nats.errors.Error):  # closed or draining: it went with the connection
                await sub.unsubscribe()
    finally:
        # (a connection that is gone can't delete it: the inactivity threshold does, later)
        with contextlib.suppress(nats.errors.Error):
            await broker.js.delete_consumer(stream, info.name)
