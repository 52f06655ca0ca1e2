"""A failed job whose body nearly fills a message still reaches the failed stream (its body moves to
the object store beside the failure record) and can be requeued from there; it is never redelivered
in a loop because its copy did not fit."""

from __future__ import annotations

import asyncio

from naq_nb.core import blobs
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs


async def _wait_failed(broker, job_id: str, timeout: float = 60.0) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        found = [f for f in await list_failed(broker) if f["job_id"] == job_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the failed stream")


async def test_a_failed_job_near_max_payload_is_dead_lettered_and_requeueable(broker, start_worker, tmp_path):
    # Just under what one message holds, so the job itself is sent inline (not offloaded at enqueue).
    size = blobs.inline_limit(broker) - 4_000
    job = await Queue(broker).enqueue(jobs.fail_until_padded, str(tmp_path / "count"), 2, "x" * size)
    w = await start_worker()
    rec = await wait_for_result(broker, job.job_id, 60)
    assert rec.status == "failed" and "attempt 1 fails" in rec.meta["error"]
    entry = await _wait_failed(broker, job.job_id)
    assert entry["requeueable"]
    assert w.stats.get("processed", 0) >= 1
    await requeue_failed(broker, job.job_id)
    again = await wait_for_result(broker, job.job_id, 60)
    assert again.ok and again.unwrap() == 2, "the requeued copy (a reference to the stored body) ran"
