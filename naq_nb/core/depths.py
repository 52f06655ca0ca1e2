"""Queue figures from the server itself: waiting and in-flight jobs per queue, every queue.

A work-queue stream keeps a job until a worker acknowledges it, so the stream's
count per subject includes jobs a worker holds (running, or buffered for a free
slot). The queue's consumer knows how many it delivered and has not seen
acknowledged (``num_ack_pending``): those are held by workers (running or
buffered), the rest wait for one. A queue nobody ever served has no consumer;
all its jobs wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["QueueDepth", "queue_depths"]


class QueueDepth(TypedDict):
    """One queue's jobs as the server counts them."""

    total: int  # in the stream
    queued: int  # not delivered to a worker yet
    held: int  # delivered, not acknowledged (running, or buffered at a worker)


async def queue_depths(broker: "Broker", queues: list[str] | None = None) -> dict[str, QueueDepth]:
    """``{queue: QueueDepth}`` for every queue that has jobs in the stream, plus ``queues`` (zeros)."""
    lay = broker.layout
    wildcard = lay.all_queues_subject
    info = await broker.js.stream_info(lay.jobs_stream, subjects_filter=wildcard)
    counts = {lay.queue_of_subject(s): int(n) for s, n in (info.state.subjects or {}).items()}
    out: dict[str, QueueDepth] = {}
    for q in sorted(set(counts) | set(queues or ())):
        total = counts.get(q, 0)
        held = 0
        if total:
            try:
                ci = await broker.js.consumer_info(lay.jobs_stream, lay.consumer_name(q))
                held = min(total, int(ci.num_ack_pending or 0))
            except NotFoundError:
                held = 0  # no worker ever served it: every job waits
        out[q] = {"total": total, "queued": total - held, "held": held}
    return out
