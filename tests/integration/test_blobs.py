"""Large data: arguments, captured values and results over max_payload go through the object store;
``nq.put`` stores a value once; missing or corrupted objects give a clear error on the job."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
from nats.js import api
from nats.js.errors import NotFoundError

import naq_nb as nq
from naq_nb.client.loop import run_sync
from naq_nb.core import blobcopies, blobs
from naq_nb.core.blobs import BlobError
from naq_nb.core.broker import Broker
from naq_nb.core.errors import JobNotFinishedError
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.job import JobOptions
from naq_nb.core.cancel import cancel_job
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result
from naq_nb.notebook import local as local_mod

from helpers import dead_lettered

MB = 1024 * 1024


def big_frame(mb: int = 50) -> pd.DataFrame:
    rows = mb * MB // (8 * 8)
    return pd.DataFrame(np.random.default_rng(1).random((rows, 8)), columns=list("abcdefgh"))


def double(df: pd.DataFrame) -> pd.DataFrame:
    return df * 2


def echo(x):
    return x


def make_bytes(n: int) -> bytes:
    return b"r" * n


class BigError(Exception):
    def __init__(self, blob: bytes) -> None:
        super().__init__(f"failed with {len(blob)} bytes")
        self.blob = blob


def fail_big(n: int) -> None:
    raise BigError(b"e" * n)


async def object_names(broker: Broker, bucket: str) -> list[str]:
    store = await blobs._store(broker, bucket)
    try:
        return sorted(o.name for o in await store.list(ignore_deletes=True))
    except NotFoundError:  # nats-py's list() raises on an empty bucket
        return []


async def wait_names(broker: Broker, bucket: str, pred, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = await object_names(broker, bucket)
        if pred(names):
            return names
        assert time.monotonic() < deadline, f"objects in {bucket}: {names}"
        await asyncio.sleep(0.1)


@pytest.fixture
def no_cluster_left():
    yield
    if local_mod._current is not None:
        local_mod._current.stop()


# --- the core Queue / Worker path -----------------------------------------------------------------
async def test_50mb_dataframe_in_and_out_through_queue_and_worker(broker, start_worker):
    await start_worker()
    df = big_frame(50)
    t0 = time.perf_counter()
    job = await Queue(broker).enqueue(double, df)
    t1 = time.perf_counter()
    rec = await wait_for_result(broker, job.job_id, 120)
    out = rec.unwrap()
    t2 = time.perf_counter()
    print(f"\n50 MB DataFrame: enqueue {t1 - t0:.2f}s, enqueue to result in hand {t2 - t0:.2f}s")
    pd.testing.assert_frame_equal(out, df * 2)
    head = (await (await broker.kv(broker.layout.results_bucket)).get(job.job_id)).value
    assert len(head) < 4096 and b'"blob"' in head, "only the record's head stays in the results bucket"
    # The body's object is deleted once the job succeeded; the result's stays (until the result TTL).
    await wait_names(broker, broker.layout.objects_bucket, lambda n: not n)
    assert len(await object_names(broker, broker.layout.result_objects_bucket)) == 1


async def test_object_buckets_have_the_layout_ttls(broker, start_worker):
    await start_worker()
    big = b"x" * (broker.max_payload + 10)
    job = await Queue(broker).enqueue(echo, big)
    assert (await wait_for_result(broker, job.job_id, 60)).unwrap() == big
    lay = broker.layout
    info = await broker.js.stream_info(f"OBJ_{lay.result_objects_bucket}")
    assert info.config.max_age == lay.result_ttl, "result objects expire with the results"
    info = await broker.js.stream_info(f"OBJ_{lay.objects_bucket}")
    assert info.config.max_age == lay.status_ttl


async def test_small_jobs_never_touch_the_object_store(broker, start_worker):
    await start_worker()
    job = await Queue(broker).enqueue(make_bytes, 10)
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == b"r" * 10
    with pytest.raises(NotFoundError):
        await broker.js.stream_info(f"OBJ_{broker.layout.objects_bucket}")


async def test_missing_arguments_object_fails_the_job_clearly(broker, start_worker):
    q = Queue(broker)
    gone = await q.enqueue(len, b"x" * (2 * MB))
    bad = await q.enqueue(len, b"y" * (2 * MB))
    names = await object_names(broker, broker.layout.objects_bucket)
    assert len(names) == 2
    store = await blobs._store(broker, broker.layout.objects_bucket)
    by_job = {n.split(".")[1]: n for n in names}
    await store.delete(by_job[gone.job_id])
    await store.put(by_job[bad.job_id], b"z" * (2 * MB))  # same name, other content
    await start_worker()
    rec = await wait_for_result(broker, gone.job_id, 90)
    assert rec.status == "failed" and "is missing" in rec.meta["error"] and gone.job_id in rec.meta["error"]
    rec = await wait_for_result(broker, bad.job_id, 90)
    assert rec.status == "failed" and "corrupted" in rec.meta["error"]
    failed = await list_failed(broker)
    assert {f["job_id"] for f in failed} >= {gone.job_id, bad.job_id}, "kept in the failed stream"


async def test_a_big_closure_shared_by_a_batch_is_stored_once(broker, start_worker):
    arr = np.arange(2 * MB // 8, dtype=np.float64)  # 2 MB captured

    def pick(i):
        return float(arr[i])
    q = Queue(broker)
    batch = await q.enqueue_jobs([q.make_job(pick, (i,)) for i in range(5)])
    names = await object_names(broker, broker.layout.objects_bucket)
    assert len(names) == 1 and names[0].startswith("put."), names
    assert all(j.function is pick for j in batch) and batch[0].function_name.endswith("pick")
    await start_worker()
    assert [(await wait_for_result(broker, j.job_id, 90)).unwrap() for j in batch] == [0.0, 1.0, 2.0, 3.0, 4.0]
    st = await (await broker.kv(broker.layout.status_bucket)).get(batch[0].job_id)
    assert b"pick" in st.value, "the job keeps its function's name"


async def test_cancelling_a_queued_job_deletes_its_object(broker):
    job = await Queue(broker).enqueue(len, b"x" * (2 * MB))
    assert len(await object_names(broker, broker.layout.objects_bucket)) == 1
    assert await cancel_job(broker, job.job_id, job.sequence)
    assert await object_names(broker, broker.layout.objects_bucket) == []


async def test_missing_or_corrupted_result_object_is_a_clear_error(broker, start_worker):
    await start_worker()
    q = Queue(broker)
    jobs_ = [await q.enqueue(make_bytes, 2 * MB) for _ in range(2)]
    for j in jobs_:
        await wait_for_result(broker, j.job_id, 60)
    store = await blobs._store(broker, broker.layout.result_objects_bucket)
    by_job = {n.split(".")[1]: n for n in await object_names(broker, broker.layout.result_objects_bucket)}
    await store.delete(by_job[jobs_[0].job_id])
    await store.put(by_job[jobs_[1].job_id], b"garbage")
    with pytest.raises(BlobError, match="result of job .* is missing") as missing:
        (await wait_for_result(broker, jobs_[0].job_id, 5)).unwrap()
    with pytest.raises(BlobError, match="corrupted") as corrupted:
        (await wait_for_result(broker, jobs_[1].job_id, 5)).unwrap()
    # Each error names its job (the record's head carries the id: ResultMeta has no other place for it).
    assert f"the result of job {jobs_[0].job_id} " in str(missing.value)
    assert f"the result of job {jobs_[1].job_id} " in str(corrupted.value)


async def test_stalled_download_ends_with_an_error(broker, start_worker, monkeypatch):
    await start_worker()
    job = await Queue(broker).enqueue(make_bytes, 2 * MB)
    await wait_for_result(broker, job.job_id, 60)
    lay = broker.layout
    # Lose the chunks but keep the object's metadata: the download would wait forever.
    await broker.js.purge_stream(f"OBJ_{lay.result_objects_bucket}", subject=f"$O.{lay.result_objects_bucket}.C.>")
    monkeypatch.setattr(blobs, "_STALL", 1.0)
    with pytest.raises(BlobError, match="no chunk arrived"):
        (await asyncio.wait_for(wait_for_result(broker, job.job_id, 5), 30)).unwrap()


async def test_purging_a_result_deletes_its_object(broker, start_worker):
    await start_worker()
    job = await Queue(broker).enqueue(fail_big, 2 * MB)
    rec = await wait_for_result(broker, job.job_id, 60)
    assert rec.status == "failed"
    with pytest.raises(BigError) as ei:
        rec.unwrap()
    assert len(ei.value.blob) == 2 * MB, "a big exception travels too"
    [old] = await object_names(broker, broker.layout.result_objects_bucket)
    await requeue_failed(broker, job.job_id)  # purges the old result, and so deletes its object
    await wait_for_result(broker, job.job_id, 60)  # the new run fails again: a new object
    names = await object_names(broker, broker.layout.result_objects_bucket)
    assert len(names) == 1 and names != [old]


async def test_signed_big_job_reference_and_body_are_verified(settings, broker, start_worker):
    key = settings.with_(signing_key=b"s3cret")
    await start_worker(settings=key)
    good = await Broker.connect(settings=key)
    wrong = await Broker.connect(settings=settings.with_(signing_key=b"other"))
    try:
        unsigned = await Queue(broker).enqueue(len, b"x" * (2 * MB))
        j = await Queue(good).enqueue(len, b"x" * (2 * MB))
        assert (await wait_for_result(good, j.job_id, 60)).unwrap() == 2 * MB
        forged = await Queue(wrong).enqueue(len, b"x" * (2 * MB))
        # Both dead-lettered with why, and nothing written under the ids they name (unverified).
        reasons = await dead_lettered(good, [unsigned.job_id, forged.job_id])
        assert "not signed" in reasons[unsigned.job_id] and "does not verify" in reasons[forged.job_id]
        for jid in (unsigned.job_id, forged.job_id):
            with pytest.raises(JobNotFinishedError):  # still only queued
                await wait_for_result(good, jid, 0)
    finally:
        await good.close()
        await wrong.close()


async def test_schedule_body_over_max_payload_is_refused_at_the_call(broker):
    from naq_nb.core.errors import PayloadTooLargeError
    from naq_nb.core.schedules import make_schedule
    job = Queue(broker).make_job(len, (b"x" * (broker.max_payload + 10),), {}, JobOptions())
    with pytest.raises(PayloadTooLargeError, match="max_payload"):
        make_schedule(job, broker, interval=60)


def test_a_delayed_job_over_max_payload_is_refused_naming_nq_put(nb_client):
    """Any other big argument goes through the object store by itself: the refusal says why this one
    does not, and names the reference that does work (it pointed at 'a path or URL' only)."""
    big = b"x" * (2 * MB)  # over the default 1 MB
    with pytest.raises(nq.PayloadTooLargeError, match=r"scheduled or delayed job.*nq\.put\(value\)"):
        nq.options(delay=60).submit(len, big)


async def test_json_mode_bodies_and_results_over_max_payload(settings, start_worker):
    import jobs
    json_settings = settings.with_(serializer="json")
    await start_worker(settings=json_settings)
    jb = await Broker.connect(settings=json_settings)
    try:
        job = await Queue(jb).enqueue(jobs.add, "x" * (2 * MB), "y")
        assert (await wait_for_result(jb, job.job_id, 60)).unwrap() == "x" * (2 * MB) + "y"
    finally:
        await jb.close()


# --- the notebook path ----------------------------------------------------------------------------
def test_50mb_dataframe_and_16mb_closure_through_local(no_cluster_left):
    nq.local(workers=2, scheduler=False)
    df = big_frame(50)
    t0 = time.perf_counter()
    fut = nq.submit(double, df)
    out = fut.result(timeout=120)
    t1 = time.perf_counter()
    print(f"\nnq.local(): 50 MB DataFrame in and out of a job {t1 - t0:.2f}s")
    pd.testing.assert_frame_equal(out, df * 2)
    # the same result through naq's API, by job id
    pd.testing.assert_frame_equal(nq.fetch_job_result_sync(fut.job_id, timeout=30), df * 2)

    arr = np.arange(2 * MB, dtype=np.float64)  # 16 MB captured by a closure
    fut = nq.submit(lambda i: float(arr[i]) + arr.size, 5)
    assert fut.result(timeout=120) == 5.0 + arr.size


def test_big_result_through_job_futures_downloaded(nb_client, thread_worker):
    thread_worker()
    assert not blobcopies.keeping(), "no nq.local(): every byte goes through the object store"
    fut = nq.submit(make_bytes, 2 * MB)
    assert fut.result(timeout=90) == b"r" * (2 * MB)
    assert nq.fetch_job_result_sync(fut.job_id, nats_url=nb_client.url, timeout=30) == b"r" * (2 * MB)
    again = nq.job(fut.job_id)  # attached later: fetched, then downloaded
    assert again.result(timeout=60) == b"r" * (2 * MB)

    async def drop_objects() -> None:
        b = await nb_client.broker()
        store = await blobs._store(b, b.layout.result_objects_bucket)
        for name in await object_names(b, b.layout.result_objects_bucket):
            await store.delete(name)
    run_sync(drop_objects())
    with pytest.raises(BlobError, match="is missing"):
        nq.job(fut.job_id).result(timeout=60)


def test_put_uploads_once_for_a_map_and_resolves_anywhere(no_cluster_left):
    nq.local(workers=2, scheduler=False)
    df = big_frame(8)
    ref = nq.put(df)
    assert nq.put(df) == ref and "bytes" in repr(ref)

    def score(frame, i):
        return float(frame["a"].iloc[i])

    futs = nq.map(lambda i: score(ref, i), range(20))  # captured by a closure
    assert [f.result(timeout=120) for f in futs] == [float(df["a"].iloc[i]) for i in range(20)]
    nested = nq.submit(lambda d: d["frame"].shape, {"frame": ref})  # nested in an argument
    assert nested.result(timeout=60) == df.shape

    client = nq.default_client()

    async def names() -> list[str]:
        b = await client.broker()
        return await object_names(b, b.layout.objects_bucket)
    assert run_sync(names()) == [ref.name], "one upload for all the jobs; no job body was offloaded"
    pd.testing.assert_frame_equal(nq.get_object(ref), df)
    nq.delete_object(ref)  # (the worker process keeps the copy it fetched: same name, same bytes)
    assert run_sync(names()) == []
    gone = nq.put(big_frame(9))
    nq.delete_object(gone)  # deleted before any worker fetched it
    with pytest.raises(BlobError, match="nq.put object .* is missing"):
        nq.submit(lambda: gone.shape).result(timeout=60)
    with pytest.raises(TypeError, match="ObjectRef returned by nq.put"):
        nq.get_object("not a ref")
    with pytest.raises(TypeError, match="ObjectRef returned by nq.put"):
        nq.delete_object(df)
    with pytest.raises(nq.SerializationError, match=r"nq.put\(\): cannot pickle the lock"):
        nq.put(threading.Lock())
    with pytest.raises(TypeError, match="client must be a naq_nb Client"):
        nq.put(1, client="nats://x")


async def test_bodies_and_results_over_a_small_max_payload_go_through_the_object_store(settings, start_worker,
                                                                                      tmp_path):
    """nats-py's 128 KiB object chunks do not fit a server whose max_payload is 64 KiB."""
    from naq_nb.core.server import EmbeddedServer
    import jobs
    with EmbeddedServer(store_dir=tmp_path / "js", max_payload=64 * 1024) as srv:
        small = settings.with_(nats_url=srv.url)
        await start_worker(settings=small)
        b = await Broker.connect(settings=small)
        try:
            assert b.max_payload == 64 * 1024
            text = "x" * (300 * 1024)
            made = await Queue(b).enqueue_many([(jobs.add, (text, str(i)), {}) for i in range(3)])
            for i, job in enumerate(made):
                assert (await wait_for_result(b, job.job_id, 60)).unwrap() == text + str(i)
        finally:
            await b.close()


async def test_a_reused_id_of_a_call_with_an_offloaded_body_is_the_same_job(broker):
    """The claim's digest is of the call, not of its object-store reference (a fresh name each time)."""
    import jobs
    q = Queue(broker, "nobody").configure(job_id="big-1")
    text = "x" * (broker.max_payload + 10)
    first = await q.enqueue(jobs.add, text, "y")
    again = await q.enqueue(jobs.add, text, "y")
    assert not first.duplicate and again.duplicate and await Queue(broker, "nobody").count() == 1



async def test_a_reused_id_of_a_big_call_stores_no_second_copy_of_its_body(broker):
    # Each repeat used to upload the arguments again, kept by nothing until NAQ_STATUS_TTL.
    import jobs
    q = Queue(broker, "nobody").configure(key="nightly-report")
    text = "x" * (2 * broker.max_payload)
    first = await q.enqueue(jobs.add, text, "y")
    stored = await object_names(broker, broker.layout.objects_bucket)
    assert len(stored) == 1
    for _ in range(3):
        again = await q.enqueue(jobs.add, text, "y")
        assert again.duplicate and again.job_id == first.job_id
    assert await object_names(broker, broker.layout.objects_bucket) == stored


async def test_a_job_sent_again_and_dropped_by_the_server_leaves_no_object(broker):
    """An id whose first enqueue is in doubt (claim not marked stored) is sent again; the server drops
    the copy (Nats-Msg-Id), and the copy's body object goes with it: the stored job names the first."""
    import jobs
    q = Queue(broker, "nobody").configure(job_id="in-doubt")
    text = "x" * (2 * broker.max_payload)
    first = await q.enqueue(jobs.add, text, "y")
    stored = await object_names(broker, broker.layout.objects_bucket)
    meta = await broker.kv(broker.layout.meta_bucket)
    key = broker.layout.claim_key(first.job_id)
    claim = json.loads((await meta.get(key)).value)
    await meta.put(key, json.dumps({k: v for k, v in claim.items() if k != "stored"}).encode())
    again = await q.enqueue(jobs.add, text, "y")
    assert again.duplicate and again.sequence == first.sequence, "sent again, dropped by the server"
    assert await object_names(broker, broker.layout.objects_bucket) == stored

# --- references made by hand, objects changed by hand ----------------------------------------------
async def _object_streams(broker) -> set[str]:
    return {s.config.name for s in await broker.js.streams_info() if s.config.name.startswith("OBJ_")}


async def test_a_reference_to_a_bucket_that_is_not_ours_is_refused_and_creates_none(broker):
    # Reading (or deleting) through a forged reference used to create the bucket it named, with no TTL.
    before = await _object_streams(broker)
    forged = blobs.ObjectRef("some_bucket", "x", 10, "00" * 32)
    with pytest.raises(BlobError, match="object store 'some_bucket' is not one of this deployment's"):
        await blobs.get_value(broker, forged)
    with pytest.raises(BlobError, match="not one of this deployment's"):
        await blobs.get_value(broker, blobs.ObjectRef("bad name!", "x", 10, "00" * 32))  # no raw nats error
    await blobs.delete_value(broker, blobs.ObjectRef("other_bucket", "x", 10, "00" * 32))  # nothing to delete
    assert await _object_streams(broker) == before


async def test_putting_a_value_again_repairs_its_changed_object(broker):
    # The object's bytes changed by hand, its stored digest made to match them (so a download alone
    # would not notice): the same nq.put uploads it again instead of handing out the changed object.
    import base64
    import hashlib
    import json
    value = b"g" * 100_000
    ref = await blobs.put_value(broker, value)
    store = await broker.js.object_store(ref.bucket)
    info = await store.get_info(ref.name)
    data = bytearray((await store.get(ref.name)).data)
    data[-10] ^= 0xFF
    stream, chunks = f"OBJ_{ref.bucket}", f"$O.{ref.bucket}.C.{info.nuid}"
    await broker.js.purge_stream(stream, subject=chunks)
    await broker.js.publish(chunks, bytes(data))
    meta_subject = f"$O.{ref.bucket}.M.{base64.urlsafe_b64encode(ref.name.encode()).decode()}"
    meta = json.loads((await broker.js.get_last_msg(stream, meta_subject)).data)
    meta["digest"] = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(bytes(data)).digest()).decode()
    await broker.js.publish(meta_subject, json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})

    again = await blobs.put_value(broker, value)
    assert again == ref
    assert (await store.get(ref.name)).data != bytes(data), "the changed bytes were replaced"


async def test_a_shared_function_that_cannot_be_pickled_is_named_as_such(broker):
    # It is not an nq.put() value (the message used to say so): the batch's shared function.
    lock = threading.Lock()

    def holds_a_lock(x):
        return lock, x

    q = Queue(broker, "nobody")
    with pytest.raises(nq.SerializationError, match="the function the batch's jobs share: cannot pickle the function"):
        await q.enqueue_many([(holds_a_lock, (i,), {}) for i in range(2)])
    assert await q.count() == 0


async def test_a_value_put_again_late_in_its_objects_life_gets_a_full_life(settings):
    """nq.put of a value already stored handed out the stored object, however close to its expiry: a
    cell re-run on day 6.9 of NAQ_STATUS_TTL's 7 made a reference whose jobs failed hours later."""
    ttl = 4.0
    b = await Broker.connect(settings=settings.with_(status_ttl=ttl, result_ttl=ttl))
    try:
        value = b"q" * 100_000
        t0 = time.monotonic()
        first = await blobs.put_value(b, value)
        await asyncio.sleep(max(0.0, t0 + ttl * 0.6 - time.monotonic()))  # past half its life
        second = await blobs.put_value(b, value)
        store = await blobs._store(b, first.bucket)

        async def first_gone() -> bool:
            try:
                await store.get_info(first.name)
                return False
            except NotFoundError:
                return True

        deadline = time.monotonic() + 3 * ttl
        while not await first_gone():
            assert time.monotonic() < deadline, "the first object never expired"
            await asyncio.sleep(0.1)
        assert await blobs.get_value(b, second) == value, "the second put's reference outlives the first"
    finally:
        await b.close()


async def test_deleting_a_value_deletes_its_copies_put_earlier(settings):
    """Put again past half its life, a value is a second object: deleting it deletes both."""
    ttl = 2.0
    b = await Broker.connect(settings=settings.with_(status_ttl=ttl, result_ttl=ttl))
    try:
        t0 = time.monotonic()
        first = await blobs.put_value(b, b"d" * 50_000)
        await asyncio.sleep(max(0.0, t0 + ttl * 0.6 - time.monotonic()))
        second = await blobs.put_value(b, b"d" * 50_000)
        assert second.name != first.name
        assert await blobs.get_value(b, first) == b"d" * 50_000, "the first is still there"
        await blobs.delete_value(b, second)
        for ref in (first, second):
            with pytest.raises(BlobError, match="is missing"):
                await blobs.get_value(b, ref)
    finally:
        await b.close()


async def test_object_buckets_keep_objects_as_long_as_their_record_buckets(settings, broker, start_worker):
    """Whoever made an object bucket first set its TTL: a client with NAQ_RESULT_TTL=60 and a worker
    left at 3 kept small results 60 s but big ones 3 s, and the 'missing' error named the client's 60 s."""
    lay = broker.layout  # this client made the record buckets: results kept result_ttl
    await start_worker(settings=settings.with_(result_ttl=3.0))  # the worker makes the result objects bucket
    job = await Queue(broker).enqueue(make_bytes, broker.max_payload + 10)
    assert (await wait_for_result(broker, job.job_id, 60)).status == "succeeded"
    results = (await broker.js.stream_info(lay.kv_stream(lay.results_bucket))).config.max_age
    objects = (await broker.js.stream_info(f"OBJ_{lay.result_objects_bucket}")).config.max_age
    assert results == lay.result_ttl and objects == results

    # A bucket made before with another TTL is set to its record bucket's by the next process to open it.
    await broker.js.create_object_store(lay.objects_bucket, config=api.ObjectStoreConfig(ttl=5.0))
    other = await Broker.connect(settings=broker.settings)
    try:
        await blobs.put_value(other, b"v" * 10)
        objects = (await broker.js.stream_info(f"OBJ_{lay.objects_bucket}")).config.max_age
        assert objects == (await broker.js.stream_info(lay.kv_stream(lay.status_bucket))).config.max_age
    finally:
        await other.close()


async def test_a_value_put_by_several_calls_at_once_is_uploaded_once(broker):
    """Three threads putting one 8 MB value at once stored it three times (150 MB for a 50 MB value):
    each call found no object yet, and the two copies nothing names stayed for NAQ_STATUS_TTL."""
    value = os.urandom(8 * MB)
    refs = await asyncio.gather(*(blobs.put_value(broker, value) for _ in range(3)))
    assert len(set(refs)) == 1
    stored = (await broker.js.stream_info(f"OBJ_{broker.layout.objects_bucket}")).state.bytes
    assert stored < 2 * len(value), f"{stored:,} bytes stored for one {len(value):,}-byte value"
    assert await blobs.get_value(broker, refs[0]) == value


async def test_a_value_put_again_counts_its_life_by_the_servers_ttl(settings):
    """A client left at the default NAQ_STATUS_TTL (7 days) on a deployment whose status bucket keeps 4 s:
    its values live 4 s, so a put again 2.4 s later must not hand out the first object."""
    ttl = 4.0
    maker = await Broker.connect(settings=settings.with_(status_ttl=ttl, result_ttl=ttl))
    await maker.ensure_layout()  # the status bucket: 4 s
    b = await Broker.connect(settings=settings)  # this process thinks 7 days
    try:
        t0 = time.monotonic()
        first = await blobs.put_value(b, b"s" * 10_000)
        info = await b.js.stream_info(f"OBJ_{b.layout.objects_bucket}")
        assert info.config.max_age == ttl, "the object bucket keeps what the status bucket keeps"
        await asyncio.sleep(max(0.0, t0 + ttl * 0.6 - time.monotonic()))
        second = await blobs.put_value(b, b"s" * 10_000)
        assert second.name != first.name, "a reference with less than half its life left was handed out"
    finally:
        await b.close()
        await maker.close()


async def test_jobs_that_start_together_download_a_put_value_once(broker, monkeypatch):
    """A worker with 4 slots starting 4 jobs over one 150 MB nq.put value downloaded it 4 times at once
    (its process peaked at 2.3 GB): each job missed the cache the others were still filling."""
    import cloudpickle

    value = os.urandom(4 * MB)
    ref = await blobs.put_value(broker, value)
    body = cloudpickle.dumps((len, (ref,), {}))
    monkeypatch.setattr(blobcopies, "_cache", type(blobcopies._cache)())  # this process never fetched it
    downloads = []
    resolve = blobs.resolve_buffer

    async def counted(*args, **kwargs):
        downloads.append(1)
        return await resolve(*args, **kwargs)

    monkeypatch.setattr(blobs, "resolve_buffer", counted)
    decodes = (blobs.decode_with_objects(broker, lambda: cloudpickle.loads(body)) for _ in range(4))
    calls = await asyncio.gather(*decodes)
    assert all(args[0] == value for _fn, args, _kw in calls)
    assert len(downloads) == 1, f"{len(downloads)} downloads of one value"
