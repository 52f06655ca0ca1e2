"""`naq purge` against real jobs: what it removes is cancelled, waiters and dependents learn it."""

from __future__ import annotations

import asyncio

from naq_nb.core.job import TERMINAL, JobStatus
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

import jobs
from helpers import eventually
from test_cli import naq


async def test_purged_jobs_read_cancelled_and_their_dependents_fail(broker, nats_server, start_worker):
    # A bare stream purge left every purged job reading 'queued' for ever: result() timed out telling
    # the user to start a worker for it, and its dependents waited out NAQ_STATUS_TTL.
    q = Queue(broker, "idle")  # nobody serves it
    purged = await q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(3)])
    await start_worker()  # serves 'default', where the dependent runs
    child = await Queue(broker).configure(depends_on=purged[0]).enqueue(jobs.add, 1, 2)
    out = await asyncio.to_thread(naq, "purge", "idle", url=nats_server.url)
    assert out.returncode == 0 and "purged 3 job(s) from queue 'idle'" in out.stdout, out.stderr
    for j in purged:
        r = await wait_for_result(broker, j.job_id, 15)
        assert r.status == "cancelled" and "purged from queue 'idle'" in str(r.meta.get("error")), r.meta
        assert (await get_status(broker, j.job_id))["status"] == "cancelled"
    r = await wait_for_result(broker, child.job_id, 15)
    assert r.status == "failed" and purged[0].job_id in str(r.meta.get("error")), r.meta


async def test_a_purge_racing_a_worker_leaves_no_job_queued_for_ever(broker, nats_server, start_worker):
    # Each job either ran (its message was at a worker) or was purged and reads cancelled. The jobs
    # take 10 s at 4 slots, so the purge (a CLI start, seconds on a loaded machine) lands mid-way.
    js = await Queue(broker).enqueue_many([(jobs.sleep_for, (0.1,), {})] * 400)
    w = await start_worker(concurrency=4)
    await eventually(lambda: _any_done(broker, js), timeout=30, what="the worker under way")
    out = await asyncio.to_thread(naq, "purge", url=nats_server.url)  # (the worker runs on meanwhile)
    assert out.returncode == 0, out.stderr
    await w.stop()
    ends = [(await wait_for_result(broker, j.job_id, 30)).status for j in js]
    assert set(ends) <= {"succeeded", "cancelled"} and "cancelled" in ends, set(ends)
    statuses = [(await get_status(broker, j.job_id))["status"] for j in js]
    assert all(JobStatus(s) in TERMINAL for s in statuses), {s for s in statuses}


async def _any_done(broker, js):
    return (await get_status(broker, js[0].job_id))["status"] == "succeeded"
