"""One-shot reads and nats-server 2.15's default of 1,000 consumers per stream.

nats-py's one-shot reads (``ObjectStore.get``, an ephemeral pull subscription)
leave their consumer on the server until its inactivity threshold, so the 1,001st
offloaded object read within that window failed with "maximum consumers limit
reached", and so would a listing polled in a loop. Bucket scans now delete their
consumer when they end (:mod:`naq_nb.core.oneshot`); the object stores' streams
allow :data:`~naq_nb.core.layout.OBJECT_STORE_MAX_CONSUMERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from naq_nb.core import blobs
from naq_nb.core.broker import Broker, create_store
from naq_nb.core.kvscan import scan_bucket
from naq_nb.core.layout import OBJECT_STORE_MAX_CONSUMERS
from naq_nb.core.oneshot import one_pass


async def consumers(broker: Broker, stream: str) -> int:
    return (await broker.js.stream_info(stream)).state.consumer_count


async def wait_for_consumers(broker: Broker, stream: str, n: int, within: float = 5.0) -> None:
    """Until ``stream`` has ``n`` consumers (a pass's delete is sent, not waited for), at most ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while (now := await consumers(broker, stream)) != n:
        assert asyncio.get_running_loop().time() < deadline, f"{now} consumers, not {n}, after {within:g}s"
        await asyncio.sleep(0.02)


async def test_a_pass_deletes_its_consumer_when_it_ends_and_when_it_fails(broker):
    await broker.ensure_layout()
    stream = broker.layout.kv_stream(broker.layout.status_bucket)
    subject = broker.layout.kv_subject(broker.layout.status_bucket, ">")
    before = await consumers(broker, stream)
    async with one_pass(broker, stream, subject) as (_sub, info):
        assert await consumers(broker, stream) == before + 1
        assert info.num_pending == 0
    await wait_for_consumers(broker, stream, before)
    with pytest.raises(RuntimeError, match="the reader failed"):
        async with one_pass(broker, stream, subject):
            raise RuntimeError("the reader failed")
    await wait_for_consumers(broker, stream, before)


async def test_scanning_a_bucket_again_and_again_leaves_no_consumer(broker):
    await broker.ensure_layout()
    bucket = broker.layout.workers_bucket
    kv = await broker.kv(bucket)
    await kv.put("w1", b'{"id": "w1"}')
    stream = broker.layout.kv_stream(bucket)
    before = await consumers(broker, stream)
    for _ in range(5):
        assert await _scan_keys(broker, bucket) == ["w1"]
    await wait_for_consumers(broker, stream, before)


async def test_over_a_thousand_object_reads_in_a_row_all_succeed(broker):
    # One object read back 1,100 times within seconds, as a sweep reading back its offloaded results
    # does: each read makes a consumer the server keeps for seconds, and nats-server 2.15 allowed
    # 1,000 (the 1,001st read failed), so the object store's stream gets a limit of its own.
    await broker.ensure_layout()
    bucket = broker.layout.result_objects_bucket
    store = await blobs._store(broker, bucket)
    data = bytes(range(256)) * 2000  # 512,000 bytes: four chunks
    await store.put("one-object", data)  # not through offload(): this process must not hold a copy
    ref = blobs.BlobRef(bucket=bucket, name="one-object", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    for _ in range(1100):
        assert await blobs.resolve(broker, ref) == data


async def test_an_object_store_made_before_gets_the_consumer_limit_on_first_use(broker):
    await broker.ensure_layout()
    bucket = broker.layout.objects_bucket
    # as an older naq_nb made it: the server's default limit
    await create_store(bucket, lambda: broker.js.create_object_store(bucket))
    await blobs._store(broker, bucket)
    cfg = (await broker.js.stream_info(f"OBJ_{bucket}")).config
    if broker.nc.connected_server_version.minor < 12:  # (the limit can't be changed there, nor is there one)
        assert cfg.max_consumers in (-1, 0, None)
    else:
        assert cfg.max_consumers == OBJECT_STORE_MAX_CONSUMERS


async def test_a_scan_cancelled_at_any_point_leaves_no_consumer(broker):
    await broker.ensure_layout()
    bucket = broker.layout.workers_bucket
    await (await broker.kv(bucket)).put("w1", b"{}")
    stream = broker.layout.kv_stream(bucket)
    before = await consumers(broker, stream)
    for i in range(40):
        task = asyncio.ensure_future(_scan_keys(broker, bucket))
        for _ in range(i % 8):  # cancelled while its consumer is made, read or deleted
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await wait_for_consumers(broker, stream, before)


async def _scan_keys(broker: Broker, bucket: str) -> list[str]:
    return [item.key async for item in scan_bucket(broker, bucket)]


async def test_a_hundred_big_downloads_started_at_once_all_succeed(broker):
    # A sweep's big results landing together: 100 downloads of 2 MB at once overran the connection's
    # pending limit on the server (a slow consumer, dropped) and about half failed after 30 s.
    await broker.ensure_layout()
    bucket = broker.layout.result_objects_bucket
    store = await blobs._store(broker, bucket)
    data = bytes(range(256)) * 8192  # 2 MiB
    await store.put("shared-big", data)
    ref = blobs.BlobRef(bucket=bucket, name="shared-big", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    got = await asyncio.wait_for(asyncio.gather(*[blobs.resolve(broker, ref) for _ in range(100)]), 60)
    assert all(g == data for g in got)
