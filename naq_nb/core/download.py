"""One object's chunks read from an Object Store bucket, its subscription ended however the read ends.

nats-py's ``ObjectStore.get`` reads the chunks through an ordered consumer and unsubscribes it only
when the last chunk has come: a download given up part-way (stalled: its chunks lost; cancelled: its
job cancelled, a worker stopping) left the subscription on the connection for good, with its
heartbeat and flow-control tasks (the heartbeat one makes a new consumer whenever the old goes
quiet), the chunks it had buffered, and its consumer on the server. The chunks are read here the same
way (:mod:`.upload` writes them, with nats-py's subjects and meta message), and the subscription ends
in a ``finally``, also when the read is cancelled while it is being made. The server deletes the
consumer once nobody listens (in seconds: an ephemeral consumer's inactivity threshold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE

from .aftercancel import run_to_end

if TYPE_CHECKING:
    from .blobsink import ChunkSink
    from .broker import Broker

__all__ = ["read_chunks"]

log = logging.getLogger("naq_nb")

_END_SECONDS = 5.0  # at most this long a read's end waits for its unsubscribe to be written


async def read_chunks(broker: "Broker", bucket: str, nuid: str, sink: "ChunkSink") -> None:
    """Write the chunks stored under ``nuid`` (an object's meta names them) into ``sink``, in order,
    until the last one (the stream has none pending after it). A read that never ends (chunks lost)
    is for the caller to give up: cancelled, it ends its subscription on the way out."""
    subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
    making = asyncio.ensure_future(broker.js.subscribe(subject, ordered_consumer=True))
    try:
        sub = await asyncio.shield(making)
    except asyncio.CancelledError:
        making.add_done_callback(_end_made)  # made all the same: ended once it is
        raise
    try:
        async for msg in sub.messages:
            # On the loop, not in an executor as nats-py's get does for any file: a copy of one chunk
            # into the sink's buffer costs less than the thread hop. (No digest here: the reader checks
            # the whole object's SHA-256 against its reference.)
            sink.write(msg.data)
            if msg.metadata.num_pending == 0:
                return
    finally:
        await run_to_end(_end(sub), _END_SECONDS, f"ending the read of chunks {subject}")


async def _end(sub: Any) -> None:
    """Unsubscribe (which also stops its heartbeat and flow-control tasks)."""
    with contextlib.suppress(nats.errors.Error):  # closed or draining: it went with the connection
        await sub.unsubscribe()


def _end_made(making: asyncio.Future) -> None:
    if not making.cancelled() and making.exception() is None:
        asyncio.ensure_future(run_to_end(_end(making.result()), _END_SECONDS, "ending a cancelled read's chunks"))
