"""One pass over part of a stream: through a consumer deleted as soon as the pass ends
(:func:`one_pass`), or one message get at a time (:func:`stream_messages`).

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
from nats.js.errors import NotFoundError

from .layout import consumer_delete_api_subject

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["one_pass", "stream_messages"]

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


async def stream_messages(
    broker: "Broker", stream: str, subject: str | None, first: int = 1, last: int | None = None
) -> AsyncIterator[api.RawStreamMsg]:
    """``stream``'s messages on ``subject`` (None: all), in order from sequence ``first`` up to ``last``,
    one get each and no consumer: a work-queue stream allows no second consumer on its subjects."""
    seq = first
    while seq and (last is None or seq <= last):
        try:
            # (a subject is always given: with none, nats-py asks for exactly `seq`, and a gap ends the walk)
            raw = await broker.js.get_msg(stream, seq=seq, subject=subject or ">", next=True)
        except NotFoundError:
            return  # no more
        assert raw.seq is not None  # a stored message always has its sequence
        yield raw
        seq = raw.seq + 1
