"""Reads that make a consumer for one pass delete it when they end (:mod:`naq_nb.core.oneshot`).

nats-server 2.15 allows a stream 1,000 consumers unless the stream names a limit
of its own; nats-py's one-shot reads (``ObjectStore.get``, an ephemeral pull
subscription) left theirs on the server until their inactivity threshold, so the
1,001st offloaded object read within that window failed with "maximum consumers
limit reached", and so would a listing polled in a loop.
"""

from __future__ import annotations

import hashlib

import pytest
from nats.js import api

from naq_nb.core import blobs
from naq_nb.core.broker import Broker
from naq_nb.core.kvscan import scan_bucket
from naq_nb.core.oneshot import one_pass


async def consumers(broker: Broker, stream: str) -> int:
    return (await broker.js.stream_info(stream)).state.consumer_count


async def test_a_pass_deletes_its_consumer_when_it_ends_and_when_it_fails(broker):
    await broker.ensure_layout()
    stream = broker.layout.kv_stream(broker.layout.status_bucket)
    subject = broker.layout.kv_subject(broker.layout.status_bucket, ">")
    before = await consumers(broker, stream)
    async with one_pass(broker, stream, subject) as (_sub, info):
        assert await consumers(broker, stream) == before + 1
        assert info.num_pending == 0
    assert await consumers(broker, stream) == before
    with pytest.raises(RuntimeError, match="the reader failed"):
        async with one_pass(broker, stream, subject):
            raise RuntimeError("the reader failed")
    assert await consumers(broker, stream) == before


async def test_scanning_a_bucket_again_and_again_leaves_no_consumer(broker):
    await broker.ensure_layout()
    bucket = broker.layout.workers_bucket
    kv = await broker.kv(bucket)
    await kv.put("w1", b'{"id": "w1"}')
    stream = broker.layout.kv_stream(bucket)
    before = await consumers(broker, stream)
    for _ in range(5):
        assert [item.key async for item in scan_bucket(broker, bucket)] == ["w1"]
    assert await consumers(broker, stream) == before


async def test_over_a_thousand_object_reads_in_a_row_all_succeed_and_leave_no_consumer(broker):
    # One object read back 1,100 times within seconds, as a sweep reading back its offloaded results
    # does; the old reads failed at the 1,001st on nats-server 2.15.
    await broker.ensure_layout()
    bucket = broker.layout.result_objects_bucket
    store = await blobs._store(broker, bucket)
    data = bytes(range(256)) * 2000  # 512,000 bytes: four chunks
    await store.put("one-object", data)  # not through offload(): this process must not hold a copy
    ref = blobs.BlobRef(bucket=bucket, name="one-object", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    for _ in range(1100):
        assert await blobs.resolve(broker, ref) == data
    assert await consumers(broker, f"OBJ_{bucket}") == 0


async def test_an_object_whose_chunks_are_gone_fails_at_once_with_a_clear_error(broker):
    await broker.ensure_layout()
    bucket = broker.layout.result_objects_bucket
    store = await blobs._store(broker, bucket)
    await store.put("chunkless", b"z" * 1000)
    await broker.js.purge_stream(f"OBJ_{bucket}", subject=f"$O.{bucket}.C.>")
    ref = blobs.BlobRef(bucket=bucket, name="chunkless", size=1000, sha256=hashlib.sha256(b"z" * 1000).hexdigest())
    with pytest.raises(blobs.BlobError, match="no chunk arrived; its chunks are gone"):
        await blobs.resolve(broker, ref)
    assert await consumers(broker, f"OBJ_{bucket}") == 0


async def test_a_stream_with_a_low_consumer_limit_still_serves_one_read_after_another(broker):
    # Each read's consumer is gone before the next one is made: a limit of one is enough.
    await broker.js.add_stream(api.StreamConfig(name="ONEPASS", subjects=["onepass.>"], max_consumers=1))
    await broker.js.publish("onepass.a", b"1")
    for _ in range(20):
        async with one_pass(broker, "ONEPASS", "onepass.>") as (sub, info):
            assert info.num_pending == 1
            [msg] = await sub.fetch(1, timeout=5)
            assert msg.data == b"1"
