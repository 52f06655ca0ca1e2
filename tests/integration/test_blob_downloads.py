"""A download from the object store reads its chunks into one buffer of the size the reference
declares: one copy of the object at a time, and an object of another size (replaced, forged, cut
short) is a clear error naming it, with nothing written past the buffer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc

import pytest
from nats.js.object_store import ObjectStore

from naq_nb.core import blobs
from naq_nb.core.blobs import BlobError, BlobRef

from helpers import eventually

MB = 1024 * 1024


async def _stored(broker, data: bytes, name: str = "obj.test") -> BlobRef:
    return await blobs.offload(broker, data, broker.layout.objects_bucket, name)


async def test_a_download_holds_one_copy_of_the_object(broker):
    # The chunks were collected in a list and joined: two full copies at once (a 150 MB nq.put value
    # took 300 MB of the worker's memory for a moment).
    data = os.urandom(48 * MB)
    ref = await _stored(broker, data)
    sha = hashlib.sha256(data).hexdigest()
    del data
    tracemalloc.start()
    try:
        got = await blobs.resolve_buffer(broker, ref)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == ref.size and hashlib.sha256(got).hexdigest() == sha
    # Above one copy: the chunks on their way, pushed by the server faster than a busy loop reads them
    # (a few MB when idle, 24 MB once on a loaded CI machine). A list and its join came to 2x or more.
    assert peak < 1.9 * ref.size, f"{peak / MB:.1f} MB at the peak for a {ref.size / MB:.0f} MB object"


@pytest.mark.parametrize("stored_mb", [3, 1], ids=["more", "fewer"])
async def test_an_object_of_another_size_than_its_reference_declares_is_named(broker, stored_mb):
    ref = await _stored(broker, os.urandom(2 * MB))
    store = await blobs._store(broker, ref.bucket)
    await store.put(ref.name, os.urandom(stored_mb * MB))  # replaced under the same name
    with pytest.raises(BlobError, match="corrupted") as err:
        await blobs.resolve_buffer(broker, ref, "the test's object")
    assert f"the test's object (object {ref.name!r} in object store {ref.bucket!r}" in str(err.value)
    assert f"holds {stored_mb * MB:,} bytes, not the {2 * MB:,} declared" in str(err.value)


async def test_a_reference_declaring_a_huge_size_is_refused_before_a_buffer_of_it_is_made(broker):
    ref = await _stored(broker, os.urandom(2 * MB))
    forged = BlobRef(ref.bucket, ref.name, 1 << 50, ref.sha256)  # a petabyte: no process could allocate it
    with pytest.raises(BlobError, match=f"{ref.name!r}.* holds {2 * MB:,} bytes, not the {1 << 50:,} declared"):
        await blobs.resolve_buffer(broker, forged)


async def test_chunks_beyond_the_declared_size_are_counted_not_written(broker, monkeypatch):
    # The object grew between the read of its size and its chunks (replaced then, or its chunks
    # forged): what the chunks bring past the buffer is an error naming the object.
    ref = await _stored(broker, os.urandom(2 * MB))
    store = await blobs._store(broker, ref.bucket)
    await store.put(ref.name, os.urandom(3 * MB))
    get_info = ObjectStore.get_info
    calls = []

    async def stale_info(self, name, *args, **kwargs):
        info = await get_info(self, name, *args, **kwargs)
        calls.append(name)
        if len(calls) == 1:  # the size as it was, the chunks of the object as it is now
            info.size = 2 * MB
        return info

    monkeypatch.setattr(ObjectStore, "get_info", stale_info)
    with pytest.raises(BlobError, match=f"{ref.name!r}.* is corrupted: it sent {3 * MB:,} bytes, not the {2 * MB:,}"):
        await blobs.resolve_buffer(broker, ref)
    assert calls == [ref.name], "one read of its meta: the size checked and the chunks read"


async def test_an_object_of_the_declared_size_with_other_bytes_fails_its_checksum(broker):
    ref = await _stored(broker, os.urandom(2 * MB))
    await (await blobs._store(broker, ref.bucket)).put(ref.name, os.urandom(2 * MB))
    with pytest.raises(BlobError, match=f"{ref.name!r}.* do not match the reference's SHA-256 {ref.sha256[:16]}"):
        await blobs.resolve_buffer(broker, ref)


@pytest.mark.parametrize("how", ["cancelled", "stalled"])
async def test_downloads_given_up_part_way_leave_no_subscription_or_consumer(broker, monkeypatch, how):
    """nats-py's ObjectStore.get unsubscribes its ordered consumer only at the last chunk: each download
    cancelled part-way (its job cancelled, a worker stopping) or given up as stalled (chunks lost) left
    its subscription on the connection for good, with its heartbeat and flow-control tasks, whatever
    chunks it had buffered, and its consumer on the server."""
    n = 4
    ref = await _stored(broker, os.urandom(2 * MB))
    await blobs.resolve_buffer(broker, ref)  # a whole download first: whatever a connection makes once
    stream = f"OBJ_{ref.bucket}"

    async def consumers() -> int:
        return (await broker.js.stream_info(stream)).state.consumer_count

    subs, consumers_before = len(broker.nc._subs), await consumers()
    # The chunks lost, the meta kept: every download waits for a chunk that never comes.
    await broker.js.purge_stream(stream, subject=f"$O.{ref.bucket}.C.>")
    monkeypatch.setattr(blobs, "_STALL", 1.0)
    downloads = [asyncio.ensure_future(blobs.resolve_buffer(broker, ref)) for _ in range(n)]
    if how == "cancelled":

        async def all_waiting() -> bool:
            return len(broker.nc._subs) == subs + n

        await eventually(all_waiting, what="every download subscribed to its chunks")
        for d in downloads:
            d.cancel()
    ended = await asyncio.wait_for(asyncio.gather(*downloads, return_exceptions=True), 30)
    expected = asyncio.CancelledError if how == "cancelled" else BlobError
    assert all(isinstance(e, expected) for e in ended), ended
    assert len(broker.nc._subs) == subs, "each download's subscription ended with it"

    async def no_more_consumers() -> bool:
        return await consumers() <= consumers_before

    await eventually(no_more_consumers, what="the downloads' consumers gone from the server")
