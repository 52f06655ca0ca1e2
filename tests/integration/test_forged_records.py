"""Damaged or forged status and result records, read by the worker and by the core readers.

Someone with publish rights (or a bug, or an older version) may write anything into the
buckets. A worker must end such a job in a clear state (run, or failed naming the record),
never hand it back as fast as it fails; a reader raises SerializationError naming the problem,
never AttributeError or TypeError from deep inside.
"""

import asyncio

import pytest

from naq_nb.core import runner as runner_mod
from naq_nb.core.broker import Broker
from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError, SerializationError
from naq_nb.core.cancel import cancel_job
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result, wait_for_result

import jobs
from helpers import eventually


async def _put(broker, bucket: str, key: str, value: bytes) -> None:
    await (await broker.kv(bucket)).put(key, value)


async def _delivered_once(broker, queue: str = "default") -> None:
    """Take the queue's next message and hand it straight back: the worker then sees a redelivery,
    which is when it reads the job's earlier status record."""
    await broker.ensure_consumer(queue)
    lay = broker.layout
    sub = await broker.js.pull_subscribe_bind(lay.consumer_name(queue), stream=lay.jobs_stream)
    try:
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.nak()
    finally:
        await sub.unsubscribe()


def _failed(broker, job_id: str):
    """For ``eventually``: the job's status record once it says failed."""

    async def check():
        rec = await get_status(broker, job_id)
        return rec if rec.get("status") == "failed" else None

    return check


@pytest.mark.parametrize(
    "forged",
    [b"[1, 2]", b"null", b'{"status": "running", "lost": "x", "attempts": "y", "seq": "z", "failures": -3}'],
    ids=["list", "null", "wrong-types"],
)
async def test_a_redelivered_job_whose_status_record_is_forged_runs(broker, start_worker, forged):
    job = await Queue(broker).enqueue(jobs.add, 2, 3)
    await _delivered_once(broker)
    await _put(broker, broker.layout.status_bucket, job.job_id, forged)
    await start_worker()
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 5


@pytest.mark.parametrize(
    "forged, why, key",
    [(b"[1]\n", "must be a JSON object", b"s3cret"), (b'{"status": "bogus"}\n', "not an end", None)],
    ids=["list-head-signed", "no-end-unsigned"],
)
async def test_a_job_whose_result_key_holds_garbage_ends_failed_naming_it(settings, start_worker, forged, why, key):
    # With signing on, even a first delivery looks for a result first; without, a redelivery does.
    cfg = settings.with_(signing_key=key or b"")
    b = await Broker.connect(settings=cfg)
    try:
        job = await Queue(b).enqueue(jobs.add, 1, 1)
        if key is None:
            await _delivered_once(b)
        await _put(b, b.layout.results_bucket, job.job_id, forged)
        w = await start_worker(settings=cfg)
        rec = await eventually(_failed(b, job.job_id), timeout=15, what="the job failed")
        assert "unreadable" in rec["error"] and why in rec["error"]
        after = await Queue(b).enqueue(jobs.add, 4, 4)  # the worker goes on
        assert (await wait_for_result(b, after.job_id, 15)).unwrap() == 8
        async def both_acked() -> bool:  # (a worker acks a job after its records: the count lags a read)
            return await Queue(b).count() == 0 and w.stats["processed"] >= 1

        await eventually(both_acked, timeout=10, what="both jobs acked (the forged one too)")
        assert w.stats["processed"] == 1, "the forged one was acked, not run"
    finally:
        await b.close()


async def test_a_worker_error_backs_off_then_fails_the_job(broker, start_worker, monkeypatch):
    # A bug outside the job's code, on every delivery: the job must end failed after a few tries,
    # each handed back with a delay, not redelivered as fast as it fails.
    calls = []

    async def broken(self, d):
        calls.append(d.delivered)
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(runner_mod, "WORKER_ERROR_TRIES", 2)
    monkeypatch.setattr(runner_mod.JobRunner, "_begin", broken)
    await start_worker()
    job = await Queue(broker).enqueue(jobs.add, 1, 2)
    rec = await eventually(_failed(broker, job.job_id), timeout=15, what="the job failed")
    assert "the worker failed handling it 2 times" in rec["error"] and "a bug in the worker" in rec["error"]
    assert calls == [1, 2]
    res = await get_result(broker, job.job_id)
    assert res is not None and res.status == "failed"


@pytest.mark.parametrize("key", [None, b"s3cret"], ids=["no-key", "key"])
async def test_reading_a_result_whose_head_is_no_object_names_the_problem(settings, key):
    b = await Broker.connect(settings=settings.with_(signing_key=key or b""))
    try:
        job = await Queue(b).enqueue(jobs.add, 1, 1)
        await _put(b, b.layout.results_bucket, job.job_id, b"[1]\n")
        with pytest.raises(SerializationError, match="must be a JSON object, not list"):
            await get_result(b, job.job_id)
    finally:
        await b.close()


async def test_a_result_with_an_expiry_of_another_type_is_read(broker):
    job = await Queue(broker).enqueue(jobs.add, 1, 1)
    await _put(broker, broker.layout.results_bucket, job.job_id, b'{"status": "failed", "expires_at": "tomorrow"}\n')
    rec = await get_result(broker, job.job_id)
    assert rec is not None and rec.status == "failed"


async def test_a_status_record_that_is_no_object_is_an_error_naming_it(broker):
    job = await Queue(broker).enqueue(jobs.add, 1, 1)
    await _put(broker, broker.layout.status_bucket, job.job_id, b'"succeeded"')
    with pytest.raises(SerializationError, match="a JSON object is needed, not str"):
        await get_status(broker, job.job_id)


@pytest.mark.parametrize("forged", [b"{}", b'{"status": "bogus"}', b'{"status": 5}'])
async def test_cancelling_a_job_whose_status_is_damaged_names_it_and_changes_nothing(broker, forged):
    job = await Queue(broker).enqueue(jobs.add, 1, 1)
    await _put(broker, broker.layout.status_bucket, job.job_id, forged)
    with pytest.raises(SerializationError, match=f"cannot cancel job {job.job_id}: its status record is damaged"):
        await cancel_job(broker, job.job_id)
    assert await Queue(broker).count() == 1


async def test_cancelling_a_job_whose_record_has_a_forged_seq_still_cancels_it(broker):
    job = await Queue(broker).enqueue(jobs.add, 1, 1)
    await _put(broker, broker.layout.status_bucket, job.job_id, b'{"status": "queued", "seq": "abc"}')
    assert await cancel_job(broker, job.job_id) is True
    assert (await get_status(broker, job.job_id))["status"] == "cancelled"


@pytest.mark.parametrize("timeout", [None, 0, 30], ids=["forever", "once", "bounded"])
async def test_waiting_for_a_result_that_is_gone_says_so(broker, start_worker, timeout):
    # The status says the job ended, its result is gone (expired or deleted): waiting for it must not
    # last forever (or until the timeout), nor claim the job has not finished.
    await start_worker()
    job = await Queue(broker).enqueue(jobs.add, 1, 1)
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 2
    await (await broker.kv(broker.layout.results_bucket)).delete(job.job_id)
    with pytest.raises(JobNotFoundError, match="succeeded, but its result is gone") as info:
        await asyncio.wait_for(wait_for_result(broker, job.job_id, timeout), 10)
    assert not isinstance(info.value, JobNotFinishedError)
