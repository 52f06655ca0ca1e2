"""An upload interrupted part-way (Ctrl-C during ``nq.put``, a cancelled enqueue of a big argument)
deletes what it wrote: no chunks stay behind until the bucket's age limit, and a read of the object
it would have made says it is missing, never reads it as whole. Once whole, an ``nq.put`` object
stays: its name is the value's, and another process may hold references to it.

The interrupt lands at a chosen message of the upload (a hook on the publishes), not after a delay:
at its Nth chunk (never sent; the publish then waits to be cancelled), or once its meta message
is stored, the object then being whole on the server while the call has not returned."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from nats.js.errors import NotFoundError

import naq_nb as nq
from naq_nb.client.loop import run_sync
from naq_nb.core import blobs
from naq_nb.core.blobcopies import forget
from naq_nb.core.broker import Broker
from naq_nb.core.errors import BlobError
from naq_nb.core.queue import Queue
from naq_nb.core.server import EmbeddedServer

from helpers import wait_until
from test_interrupted_map import fast_or_not, interrupt_sending

MB = 1024 * 1024
NTH = 5  # the chunk the interrupt lands on (a 3 MB value is 24 chunks of 128 KiB)


def interrupt_upload(b, where: str, interrupt) -> list[str]:
    """Patch broker ``b``'s publishes so that an object upload is interrupted at its ``NTH`` chunk
    (``where="chunk"``) or once its meta message is stored (``"meta"``): ``interrupt()`` runs on the
    loop, then the publish waits until it is cancelled. ``"meta_ack"``: ``interrupt()`` runs as the meta
    message goes out, which then goes on (a cancel that lands at once lands as its ack is awaited).
    Returns the chunk subjects seen. Both publish paths are patched: naq_nb's own (``publish_async``)
    and nats-py's (``js.publish``)."""
    subjects: list[str] = []
    chunks = f"$O.{b.layout.objects_bucket}.C."
    meta = f"$O.{b.layout.objects_bucket}.M."
    real_async, real_js = b.publish_async, b.js.publish

    done = []  # interrupted once: the clean-up's own publishes go through

    async def hooked(real, subject, *args, **kwargs):
        if subject.startswith(chunks) and not done:
            subjects.append(subject)
            if where == "chunk" and len(subjects) == NTH:
                done.append(interrupt())
                await asyncio.get_running_loop().create_future()  # never sent; waits to be cancelled
        if subject.startswith(meta) and where == "meta_ack" and not done:
            done.append(interrupt())  # (a cancel that lands at once: an async caller's)
            return await real(subject, *args, **kwargs)  # the cancel lands as its acknowledgement is awaited
        if subject.startswith(meta) and where == "meta" and not done:
            sent = await real(subject, *args, **kwargs)
            if isinstance(sent, asyncio.Future):  # naq_nb's publish: the acknowledgement is its future
                await asyncio.shield(sent)
            done.append(interrupt())  # the meta is stored: the object is whole on the server
            await asyncio.get_running_loop().create_future()
        return await real(subject, *args, **kwargs)

    b.publish_async = lambda subject, *a, **kw: hooked(real_async, subject, *a, **kw)
    b.js.publish = lambda subject, *a, **kw: hooked(real_js, subject, *a, **kw)
    return subjects


async def chunks_left(b, subjects: list[str]) -> int:
    """Messages still stored under the upload's chunk subjects."""
    stream = f"OBJ_{b.layout.objects_bucket}"
    left = 0
    for subject in set(subjects):
        left += ((await b.js.stream_info(stream, subjects_filter=subject)).state.subjects or {}).get(subject, 0)
    return left


@pytest.mark.parametrize("where", ["chunk", "meta"])
def test_ctrl_c_during_nq_put_deletes_a_half_upload_and_keeps_a_whole_one(nb_client, where, monkeypatch):
    value = {"weights": bytes(range(256)) * (3 * MB // 256)}
    data, sha = blobs.pickle_value(value)
    b = run_sync(nb_client.broker())
    run_sync(blobs._store(b, b.layout.objects_bucket))  # the bucket exists: the hook sees only this upload
    names: list[str] = []
    offload = blobs.offload

    async def named(broker, payload, bucket, name, **kwargs):
        names.append(name)
        return await offload(broker, payload, bucket, name, **kwargs)

    monkeypatch.setattr(blobs, "offload", named)
    main = threading.main_thread().ident  # Ctrl-C to the thread that handles it, as a kernel interrupt
    subjects = interrupt_upload(b, where, lambda: signal.pthread_kill(main, signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            nq.put(value)
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    del b.publish_async, b.js.publish  # the class's own again
    assert subjects and names, "the upload had started"
    ref = blobs.ObjectRef(b.layout.objects_bucket, names[0], len(data), sha)
    if where == "chunk":
        # The call returned at the Ctrl-C; the clean-up goes on on naq_nb's loop, bounded.
        wait_until(lambda: run_sync(chunks_left(b, subjects)) == 0, timeout=30)
        with pytest.raises(BlobError, match="is missing"):
            nq.get_object(ref)
    else:
        # Whole once its meta is stored: a put's object stays (its name is the value's: another process
        # may have put the same value and handed out references to it). The put's run ends after its
        # clean-up, which keeps every chunk.
        wait_until(lambda: not blobs._uploads[b]._runs, timeout=30)
        assert run_sync(chunks_left(b, subjects)) == len(subjects)
        forget(sha)  # (read from the server)
        assert nq.get_object(ref) == value
    again = nq.put(value)  # (a half-made object is never taken for the stored value: it is uploaded again)
    assert nq.get_object(again) == value


@pytest.mark.parametrize("where", ["chunk", "meta", "meta_ack"])
async def test_a_cancelled_enqueue_of_a_big_argument_deletes_its_chunks_before_it_ends(broker, where):
    await blobs._store(broker, broker.layout.objects_bucket)
    jobs_before = (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages
    task = asyncio.create_task(Queue(broker, "nobody").enqueue(len, b"z" * (3 * MB)))
    subjects = interrupt_upload(broker, where, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    del broker.publish_async, broker.js.publish
    assert subjects, "the upload had started"
    # An async caller's cancel returns once the clean-up is done: nothing to wait for.
    assert await chunks_left(broker, subjects) == 0
    store = await broker.js.object_store(broker.layout.objects_bucket)
    try:
        objects = await store.list(ignore_deletes=True)
    except NotFoundError:  # (nats-py's answer for a bucket with no object)
        objects = []
    assert [o.name for o in objects if o.size >= 3 * MB] == []
    assert (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages == jobs_before, "no job sent"



@pytest.mark.parametrize("way", ["batches", "one by one"])
async def test_an_enqueue_interrupted_after_its_uploads_deletes_those_of_the_jobs_it_did_not_send(
    settings, tmp_path, way, monkeypatch
):
    """Every body over max_payload is uploaded before the first job is sent. Interrupted while it
    sends, the call cancelled the jobs it had sent (their bodies go with them), but the bodies of
    the jobs it never sent stayed, named by nothing, until NAQ_STATUS_TTL (7 days)."""
    with EmbeddedServer(store_dir=tmp_path / "js", max_payload=64 * 1024) as srv:  # small: small uploads
        b = await Broker.connect(settings=settings.with_(nats_url=srv.url))
        try:
            await b.ensure_layout()
            fast_or_not(b, way, monkeypatch)
            big = os.urandom(80 * 1024)  # over max_payload, and nothing to compress
            task = asyncio.create_task(Queue(b, "nobody").enqueue_many([(len, (big,), {}) for _ in range(80)]))
            ids = interrupt_sending(b, "nobody", task.cancel, n=5)
            with pytest.raises(asyncio.CancelledError):
                await task
            del b.send
            assert 5 <= len(ids) < 80, "interrupted part-way"
            store = await b.js.object_store(b.layout.objects_bucket)
            try:
                objects = await store.list(ignore_deletes=True)
            except NotFoundError:  # (nats-py's answer for a bucket with no object)
                objects = []
            owners = {o.name.split(".")[1] for o in objects}  # (job bodies are named job.<id>.<token>)
            assert owners - set(ids) == set(), "no object of a job never sent is left"
            # The one whose message was being sent is in doubt: its body may be named by a stored job.
            assert len(owners) <= 1
        finally:
            await b.close()


async def test_a_put_cancelled_once_its_object_is_whole_keeps_it_for_another_process(broker, settings):
    """A put's object is named by the value's checksum, so another process putting the same value at
    the same time writes the same object and hands out references to it. Here the other put lands
    between this put's check for the object (none yet) and its upload, which replaces the other's meta;
    this put is then cancelled as its own meta is acknowledged. Deleting "its" object took the value
    from the other process's references; and the chunks of the meta it replaced were left to nobody."""
    other = await Broker.connect(settings=settings)  # the other process
    try:
        value = {"weights": bytes(range(256)) * (3 * MB // 256)}
        data, sha = blobs.pickle_value(value)
        bucket = broker.layout.objects_bucket
        store = await blobs._store(broker, bucket)
        theirs: list = []
        real_info = store.get_info

        async def then_the_other_puts(name, *args, **kwargs):
            try:
                return await real_info(name, *args, **kwargs)
            finally:
                if not theirs:  # (after this put's check: it found nothing)
                    ref = await blobs.put_bytes(other, data, sha)
                    theirs.append((ref, (await (await blobs._store(other, bucket)).get_info(ref.name)).nuid))

        store.get_info = then_the_other_puts
        task = asyncio.ensure_future(blobs.put_bytes(broker, data, sha))
        interrupt_upload(broker, "meta_ack", task.cancel)
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            del broker.publish_async, broker.js.publish, store.get_info
        [(ref, their_nuid)] = theirs
        forget(sha)  # (a read goes to the server, not to this process's copies)
        assert await blobs.get_value(other, ref) == value, "the other process's reference still reads the value"
        assert await chunks_left(broker, [f"$O.{bucket}.C.{their_nuid}"]) == 0, "the replaced meta's chunks are gone"
    finally:
        await other.close()

