"""The object store while the server goes away: an upload that meets a lost connection is a connection
error (the enqueue raises NaqConnectionError, the worker keeps the job), never a BlobError, which
says the data itself is bad and fails a job for good."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from nats.js import api

from helpers import eventually
from naq_nb.core.errors import NaqConnectionError, SerializationError
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

MB = 1024 * 1024


def make_after_mark(path: str, n: int, wait: float) -> bytes:
    """Mark ``path`` (the job runs), wait, then return ``n`` bytes (over max_payload: an object)."""
    Path(path).write_text("started")
    time.sleep(wait)
    return b"r" * n


async def test_an_enqueue_whose_upload_meets_a_dead_server_raises_a_connection_error(broker, own_nats_server):
    q = Queue(broker, "nobody")
    await q.enqueue(len, b"w" * (2 * MB))  # the object store is open: the next upload goes straight to it
    own_nats_server.kill()
    with pytest.raises(NaqConnectionError) as caught:
        await q.enqueue(len, b"z" * (3 * MB))
    # Not a SerializationError (nor a TypeError): `except NaqConnectionError` retry code catches it.
    assert not isinstance(caught.value, (SerializationError, TypeError)), repr(caught.value)
    assert "object store" in str(caught.value) and "3,145," in str(caught.value), "it names the upload"


async def test_a_big_result_stored_across_a_server_restart_ends_the_job_succeeded(
    broker, own_nats_server, start_worker, tmp_path, caplog
):
    """The job's work is done when its result object cannot be stored: the upload is tried again
    (the job handed back if it never lands), as for a result that fits in a message."""
    await start_worker(concurrency=1)
    warm = await Queue(broker).enqueue(make_after_mark, str(tmp_path / "warm"), 2 * MB, 0.0)
    assert len((await wait_for_result(broker, warm.job_id, 60)).unwrap()) == 2 * MB  # its object store is open
    started = tmp_path / "started"
    j = await Queue(broker).enqueue(make_after_mark, str(started), 3 * MB, 1.0)
    await eventually(lambda: asyncio.sleep(0, started.exists()), what="the job started")
    with caplog.at_level(logging.WARNING, logger="naq_nb.worker"):
        own_nats_server.kill()  # the job ends while the server is gone: its result object can't be stored
        await eventually(
            lambda: asyncio.sleep(0, "storing its result object failed" in caplog.text),
            timeout=45,
            what="the worker to try storing the result object again",
        )
    await asyncio.get_running_loop().run_in_executor(None, own_nats_server.restart)
    rec = await wait_for_result(broker, j.job_id, 90)
    assert rec.status == "succeeded", rec.meta.get("error")
    assert rec.unwrap() == b"r" * (3 * MB)


def echo(x):
    return x


async def test_object_buckets_deleted_under_a_client_and_a_worker_are_made_again(broker, start_worker):
    """Both keep a handle per bucket: with the bucket deleted (by hand, or a server restarted without its
    store) every big enqueue and every big result failed with 'stream not found' until they reconnected."""
    await start_worker()
    q = Queue(broker)
    big = b"x" * (broker.max_payload + 10)
    first = await q.enqueue(echo, big)
    assert (await wait_for_result(broker, first.job_id, 60)).unwrap() == big  # both sides hold handles now
    for bucket in (broker.layout.objects_bucket, broker.layout.result_objects_bucket):
        await broker.js.delete_stream(f"OBJ_{bucket}")
    again = await q.enqueue(echo, big + b"y")  # the client's upload
    rec = await wait_for_result(broker, again.job_id, 60)  # the worker's: the result is over max_payload too
    assert rec.status == "succeeded", rec.meta.get("error")
    assert rec.unwrap() == big + b"y"


async def test_an_enqueue_cancelled_during_its_upload_sends_no_job_and_keeps_no_object(broker, monkeypatch):
    """A Ctrl-C during nq.submit(big) cancels the enqueue on the loop; on Python 3.11 asyncio.wait_for
    (round nats-py's every chunk publish) drops a cancel that lands as its acknowledgement arrives:
    24 of 40 cancels of a 100 MB upload in progress went unheard, the upload ran on, and the job was
    sent. Emulated here (a cancel dropped at the end of the upload), so the test does not depend on luck."""
    import naq_nb.core.blobs as blobs_mod

    put = blobs_mod.write_object

    async def put_then_swallowed_cancel(*args, **kwargs):
        await put(*args, **kwargs)
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # as asyncio.wait_for does on 3.11 when the future it waited on is done

    q = Queue(broker, "nobody")
    await q.enqueue(len, b"w" * (2 * MB))  # buckets made
    monkeypatch.setattr(blobs_mod, "write_object", put_then_swallowed_cancel)
    before = (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(q.enqueue(len, b"z" * (3 * MB)))
    monkeypatch.undo()
    assert (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages == before, "no job sent"
    store = await broker.js.object_store(broker.layout.objects_bucket)
    live = [o.name for o in await store.list(ignore_deletes=True) if o.size >= 3 * MB]
    assert not live, f"the cancelled upload's object stays: {live}"


def count_and_make(path: str, n: int) -> bytes:
    """Count this run in ``path``, then return ``n`` bytes (over max_payload: an object)."""
    with open(path, "a") as f:
        f.write("x")
    return b"r" * n


async def test_an_object_store_that_is_full_fails_the_call_naming_it(broker, start_worker, tmp_path):
    """A refusal to store ('maximum bytes exceeded') came as a 503, read as a lost connection: the enqueue
    raised NaqConnectionError, and a worker handed the job back after each run, 23 runs of it in 40 s,
    then failed it as JobLostError 'delivered 23 times without an outcome', the reason gone."""
    from naq_nb.core.blobs import BlobError
    from naq_nb.core.job import JobOptions

    await start_worker(concurrency=1)
    q = Queue(broker)
    for warm in (await q.enqueue(count_and_make, str(tmp_path / "warm"), 2 * MB), await q.enqueue(len, b"w" * 2 * MB)):
        assert (await wait_for_result(broker, warm.job_id, 60)).status == "succeeded"  # both object stores made
    for bucket in (broker.layout.objects_bucket, broker.layout.result_objects_bucket):
        cfg = (await broker.js.stream_info(f"OBJ_{bucket}")).config
        cfg.max_bytes = 4 * MB  # as a full disk or an account's quota would
        await broker.js.update_stream(cfg)

    with pytest.raises(BlobError, match="maximum bytes exceeded"):
        await q.enqueue(len, b"a" * (5 * MB))
    runs = tmp_path / "runs"
    job = q.make_job(count_and_make, (str(runs), 5 * MB), {}, JobOptions.build(max_retries=0))
    await q.enqueue_job(job)
    rec = await wait_for_result(broker, job.job_id, 30)
    assert rec.status == "failed" and "maximum bytes exceeded" in rec.meta["error"], rec.meta.get("error")
    assert runs.read_text() == "x", "run once: the refusal is no outage to wait out"


async def test_a_results_bucket_that_is_full_fails_the_job_naming_it(broker, start_worker, tmp_path):
    """The same refusal for a result that fits in a message (its bucket full, as a disk or quota would
    make it): the worker handed the job back after each run, 23 runs, then JobLostError."""
    from naq_nb.core.job import JobOptions

    await start_worker(concurrency=1)
    q = Queue(broker)
    cfg = (await broker.js.stream_info(broker.layout.kv_stream(broker.layout.results_bucket))).config
    cfg.max_bytes, cfg.discard = 64 * 1024, api.DiscardPolicy.NEW  # room for failure records, not for this result
    await broker.js.update_stream(cfg)
    runs = tmp_path / "runs"
    job = q.make_job(count_and_make, (str(runs), 200 * 1024), {}, JobOptions.build(max_retries=0))
    await q.enqueue_job(job)
    rec = await wait_for_result(broker, job.job_id, 30)
    assert rec.status == "failed" and "maximum bytes exceeded" in rec.meta["error"], rec.meta.get("error")
    assert runs.read_text() == "x", "run once: the refusal is no outage to wait out"
