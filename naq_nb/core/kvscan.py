"""Read the current value of every key of a KV bucket in one pass.

nats-py's ``watchall()`` decides that its initial values are done from a
consumer-info snapshot taken while messages may already be in flight, so it can
announce "done" *before* the first value and a one-shot listing comes back empty
(seen under load). This scan uses an ephemeral pull consumer delivering the last
message per subject and stops at the message whose own ``num_pending`` is 0,
which the server computes exactly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

import nats.errors
from nats.js import api
from nats.js.kv import KV_OP

from .broker import Broker

__all__ = ["KVItem", "scan_bucket"]

_BATCH = 1000


@dataclass
class KVItem:
    key: str
    value: bytes
    revision: int


async def scan_bucket(broker: Broker, bucket: str, timeout: float = 30.0) -> AsyncIterator[KVItem]:
    """Yield every live key's last value (deleted and purged keys are skipped)."""
    lay = broker.layout
    prefix = lay.kv_subject(bucket, "")
    cfg = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0
    )
    await broker.ensure_layout()
    sub = await broker.js.pull_subscribe(f"{prefix}>", stream=lay.kv_stream(bucket), config=cfg)
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"reading bucket {bucket} took over {timeout:g}s")
            try:
                msgs = await sub.fetch(_BATCH, timeout=min(1.0, remaining))
            except nats.errors.TimeoutError:
                # The messages counted at the start may be gone since (a key purged meanwhile): then
                # none is pending any more and the scan is complete.
                if (await sub.consumer_info()).num_pending == 0:
                    return
                continue
            for msg in msgs:
                headers = msg.headers or {}
                if headers.get(KV_OP) is None and not headers.get("Nats-Marker-Reason") and msg.data:
                    yield KVItem(msg.subject[len(prefix) :], msg.data, msg.metadata.sequence.stream)
                if msg.metadata.num_pending == 0:
                    return
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass  # closed or draining connection: the subscription is gone with it
