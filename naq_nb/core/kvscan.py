"""Read current values of a KV bucket: every key in one pass (:func:`scan_bucket`), or many
named keys in few requests (:func:`read_keys`).

nats-py's ``watchall()`` decides that its initial values are done from a
consumer-info snapshot taken while messages may already be in flight, so it can
announce "done" *before* the first value and a one-shot listing comes back empty
(seen under load). This scan uses a pull consumer of its own (deleted when the
scan ends: :mod:`.oneshot`) delivering the last message per subject and stops at
the message whose own ``num_pending`` is 0, which the server computes exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

import nats.errors
from nats.js import api
from nats.js.errors import KeyNotFoundError
from nats.aio.msg import Msg
from nats.js.kv import KV_OP, KeyValue

from .broker import Broker
from .layout import DIRECT_GET_MAX_SUBJECTS, direct_get_api_subject
from .oneshot import one_pass

__all__ = ["KVItem", "scan_bucket", "read_keys"]

log = logging.getLogger("naq_nb.core")

_BATCH = 1000
#: Bytes of values one batched get asks for at most; the server sends at least one value, then says
#: how many are pending, and the rest are asked for again (a bucket of 1 MB results never floods the
#: subscription).
_BATCH_BYTES = 4 * 1024 * 1024
_GETS_AT_ONCE = 64  # key-by-key reads in flight (servers before 2.11)


@dataclass
class KVItem:
    key: str
    value: bytes
    revision: int


async def scan_bucket(broker: Broker, bucket: str, timeout: float = 30.0) -> AsyncIterator[KVItem]:
    """Yield every live key's last value, each key once (deleted and purged keys are skipped).

    The pass's consumer starts at the last message per key and goes on with what is written while
    the pass runs, so a key written meanwhile comes again (a job listed twice, once still ``queued``,
    while a sweep ran): a later message replaces the key's earlier one, a delete or purge drops it.
    The items are therefore yielded once the pass is over."""
    prefix = broker.layout.kv_subject(bucket, "")
    latest: dict[str, KVItem] = {}
    async for msg in _last_messages(broker, bucket, timeout):
        key = msg.subject[len(prefix) :]
        headers = msg.headers or {}
        if headers.get(KV_OP) is None and not headers.get("Nats-Marker-Reason") and msg.data:
            latest[key] = KVItem(key, msg.data, msg.metadata.sequence.stream)
        else:
            latest.pop(key, None)
    for item in latest.values():
        yield item


async def _last_messages(broker: Broker, bucket: str, timeout: float) -> AsyncIterator[Msg]:
    """The bucket stream's last message per key, then what is written until none is pending."""
    lay = broker.layout
    await broker.ensure_layout()
    policy = api.DeliverPolicy.LAST_PER_SUBJECT
    subject = f"{lay.kv_subject(bucket, '')}>"
    async with one_pass(broker, lay.kv_stream(bucket), subject, deliver_policy=policy) as (sub, info):
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
                yield msg
                if msg.metadata.num_pending == 0:
                    return


async def read_keys(broker: Broker, bucket: str, keys: Sequence[str], timeout: float = 10.0) -> dict[str, bytes]:
    """The current value of each of ``keys`` that has one (missing, deleted and purged keys are left out).

    Up to 1,024 keys cost one request on a server with batched direct gets (2.11+) and a bucket
    that allows direct gets (``Layout.buckets``); otherwise each key is one get, 64 in flight."""
    kv = await broker.kv(bucket)
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    if bucket not in broker.direct_buckets or not _batched_gets(broker):
        return await _get_each(kv, keys)
    out: dict[str, bytes] = {}
    for i in range(0, len(keys), DIRECT_GET_MAX_SUBJECTS):
        out.update(await _get_batched(broker, kv, bucket, keys[i : i + DIRECT_GET_MAX_SUBJECTS], timeout))
    return out


def _batched_gets(broker: Broker) -> bool:
    """True when the server answers batched direct gets (``multi_last``, nats-server 2.11+)."""
    v = broker.nc.connected_server_version
    return (v.major, v.minor) >= (2, 11)


async def _get_each(kv: KeyValue, keys: Sequence[str]) -> dict[str, bytes]:
    sem = asyncio.Semaphore(_GETS_AT_ONCE)

    async def one(key: str) -> bytes | None:
        async with sem:
            try:
                return (await kv.get(key)).value or None
            except KeyNotFoundError:  # deleted and purged keys too
                return None

    values = await asyncio.gather(*(one(k) for k in keys))
    return {k: v for k, v in zip(keys, values) if v}


async def _get_batched(
    broker: Broker, kv: KeyValue, bucket: str, keys: Sequence[str], timeout: float
) -> dict[str, bytes]:
    """Batched direct gets of ``keys`` (at most 1,024), asked again for what a byte cap left pending."""
    prefix = broker.layout.kv_subject(bucket, "")
    todo = {prefix + k: k for k in keys}
    out: dict[str, bytes] = {}
    while todo:
        answer = await _direct_get_batch(broker, broker.layout.kv_stream(bucket), list(todo), timeout)
        if answer is None or (answer[1] and not answer[0]):
            # Refused, or "more pending" with nothing sent (neither expected): asking again could
            # loop, and the key-by-key reads give the same answer.
            out.update(await _get_each(kv, list(todo.values())))
            break
        got, pending = answer
        for subject, value in got:
            key = todo.pop(subject, None)
            if key is not None and value:
                out[key] = value
        if not pending:
            break
    return out


async def _direct_get_batch(
    broker: Broker, stream: str, subjects: list[str], timeout: float
) -> tuple[list[tuple[str, bytes]], bool] | None:
    """One batched direct get: ``([(subject, value or b"" for a deletion)], more pending)``, or None
    when the server answers with an error status."""
    nc = broker.nc
    loop = asyncio.get_running_loop()
    got: list[tuple[str, bytes]] = []
    end: asyncio.Future = loop.create_future()

    async def on_msg(msg: Any) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            live = headers.get(KV_OP) is None and not headers.get("Nats-Marker-Reason")
            got.append((headers.get("Nats-Subject", ""), msg.data if live else b""))
        elif not end.done():  # the last message: 204 end of batch, 404 none of the keys exists
            end.set_result((status, headers))

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        request = {"multi_last": subjects, "batch": len(subjects), "max_bytes": _BATCH_BYTES}
        await nc.publish(direct_get_api_subject(stream), json.dumps(request).encode(), reply=inbox)
        try:
            status, headers = await asyncio.wait_for(end, timeout)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None  # as a single get that times out
    finally:
        await sub.unsubscribe()
    if status == "404":
        return [], False
    if status != "204":
        log.debug("batched get on %s refused: %s %s", stream, status, headers.get("Description"))
        return None
    return got, headers.get("Nats-Num-Pending", "0") != "0"
