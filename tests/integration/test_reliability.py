"""Retries with backoff, the failed stream, requeue, dependencies, long jobs vs ack_wait."""

import asyncio

import pytest

from naq_nb.core.errors import DependencyFailedError
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result
from naq_nb.core.retry import RetryPolicy

import jobs


async def test_retry_with_backoff_then_success(broker, start_worker, tmp_path):
    await start_worker()
    calls = tmp_path / "calls"
    q = Queue(broker).configure(retry=RetryPolicy(max_retries=3, backoff="exponential", delay=0.2))
    j = await q.enqueue(jobs.fail_until, str(calls), 3)
    rec = await wait_for_result(broker, j.job_id, 15)
    assert rec.unwrap() == 3
    times = [float(t) for t in calls.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, f"delays follow the exponential backoff: {gaps}"
    st = await get_status(broker, j.job_id)
    assert st["status"] == "succeeded" and st["failures"] == 2 and st["attempts"] == 3


async def test_exhausted_retries_land_in_failed_stream_and_requeue(broker, start_worker, tmp_path):
    w = await start_worker()
    q = Queue(broker).configure(max_retries=1, retry_delay=0)
    j = await q.enqueue(jobs.boom, "kaputt")
    rec = await wait_for_result(broker, j.job_id, 10)
    assert rec.status == "failed"
    [entry] = await list_failed(broker)
    assert entry["job_id"] == j.job_id and entry["attempts"] == 2 and entry["worker"] == w.worker_id
    assert "ValueError: kaputt" in entry["traceback"] and entry["requeueable"]
    # requeue: the same job runs again (and fails again, since boom always fails)
    assert await requeue_failed(broker, j.job_id) == j.job_id
    assert await list_failed(broker) == [] or (await list_failed(broker))[0]["seq"] != entry["seq"]
    rec2 = await wait_for_result(broker, j.job_id, 10)
    assert rec2.status == "failed" and rec2.meta["finished_at"] > rec.meta["finished_at"]


async def test_retry_only_on_listed_exceptions(broker, start_worker, tmp_path):
    await start_worker()
    q = Queue(broker).configure(retry=RetryPolicy(max_retries=3, retry_on=(ConnectionError,)))
    j = await q.enqueue(jobs.boom)  # ValueError: not retried
    rec = await wait_for_result(broker, j.job_id, 10)
    assert rec.status == "failed" and rec.meta["attempts"] == 1


async def test_dependencies_run_in_order(broker, start_worker, tmp_path):
    log = tmp_path / "order"
    q = Queue(broker)
    a = await q.enqueue(jobs.mark, str(log), "a", 0.3)
    b = await q.configure(depends_on=[a]).enqueue(jobs.mark, str(log), "b")
    c = await q.configure(depends_on=[a, b]).enqueue(jobs.mark, str(log), "c")
    assert (await get_status(broker, c.job_id))["status"] == "waiting"
    await start_worker(concurrency=4)
    assert (await wait_for_result(broker, c.job_id, 10)).unwrap() == "c"
    assert log.read_text().split() == ["a", "b", "c"]


async def test_dependent_of_failed_job_fails_naming_it(broker, start_worker):
    await start_worker(concurrency=2)
    q = Queue(broker)
    bad = await q.enqueue(jobs.boom)
    child = await q.configure(depends_on=bad).enqueue(jobs.add, 1, 1)
    rec = await wait_for_result(broker, child.job_id, 10)
    with pytest.raises(DependencyFailedError, match=bad.job_id):
        rec.unwrap()


async def test_long_job_beyond_ack_wait_runs_once(broker, start_worker, settings, tmp_path):
    # ack_wait is 1 s here; the job takes 3 s: in-progress acks must keep it from redelivery
    s = settings.with_(ack_wait=1.0)
    await start_worker(settings=s, concurrency=2)
    await start_worker(settings=s, concurrency=2)
    runs = tmp_path / "runs"
    j = await Queue(broker).enqueue(jobs.mark, str(runs), "long", 3.0)
    assert (await wait_for_result(broker, j.job_id, 15)).unwrap() == "long"
    assert runs.read_text().split() == ["long"], "the long job ran exactly once"


async def test_worker_rides_out_a_server_restart(own_nats_server, settings, start_worker):
    from naq_nb.core.broker import Broker
    await start_worker()
    b = await Broker.connect(settings=settings)
    try:
        before = await Queue(b).enqueue(jobs.add, 1, 1)
        assert (await wait_for_result(b, before.job_id, 10)).unwrap() == 2
        own_nats_server.kill()
        await asyncio.get_running_loop().run_in_executor(None, own_nats_server.restart)
        for _ in range(100):  # the client reconnects on its own; wait until it has
            if b.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        after = await Queue(b).enqueue(jobs.add, 2, 2)
        assert (await wait_for_result(b, after.job_id, 20)).unwrap() == 4
        # the job queued before the restart, and its result, survived on the persistent store
        assert (await wait_for_result(b, before.job_id, 1)).unwrap() == 2
    finally:
        await b.close()


async def test_result_written_while_the_waiter_was_disconnected_is_found(own_nats_server, settings):
    """A put made while a waiter is disconnected never reaches its subscription; the reconnect re-reads it."""
    from naq_nb.core.broker import Broker
    from naq_nb.core.records import encode_result
    waiter = await Broker.connect(settings=settings, reconnect_time_wait=5.0)  # comes back late on purpose
    writer = await Broker.connect(settings=settings)
    try:
        job = await Queue(waiter, "nobody").enqueue(jobs.add, 20, 22)  # no worker serves this queue
        waiting = asyncio.ensure_future(wait_for_result(waiter, job.job_id, 60))
        for _ in range(200):  # until it waits for the push (it has registered for reconnects then)
            if waiter._reconnect_listeners:
                break
            await asyncio.sleep(0.01)
        own_nats_server.kill()
        await asyncio.get_running_loop().run_in_executor(None, own_nats_server.restart)
        for _ in range(200):
            if writer.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert writer.nc.is_connected and not waiter.nc.is_connected
        kv = await writer.kv(writer.layout.results_bucket)
        await kv.create(job.job_id, encode_result(writer.serializer, 42, result_ttl=None))
        assert (await asyncio.wait_for(waiting, 30)).unwrap() == 42
    finally:
        await writer.close()
        await waiter.close()
