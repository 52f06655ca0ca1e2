"""A job that enqueues jobs and waits for them: its calls without a URL reach its own worker."""

from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs
from helpers import worker_process


async def test_a_job_process_enqueues_to_its_workers_server_and_prefix(broker, start_worker, monkeypatch):
    """The job process read NAQ_NATS_URL / NAQ_PREFIX from the environment, not its worker's
    connection: `naq worker -u URL` (or a Worker given settings) ran jobs whose enqueue_sync went to
    127.0.0.1:4222, and failed there, or landed under another prefix where no worker ever ran it."""
    monkeypatch.setenv("NAQ_NATS_URL", "nats://127.0.0.1:1")  # what the worker's environment says: not its server
    monkeypatch.setenv("NAQ_PREFIX", "not-this-workers")
    await start_worker(concurrency=2)  # one slot for the parent, one for the job it waits on
    parent = await Queue(broker).configure(max_retries=0, timeout=60).enqueue(jobs.enqueue_and_wait, 2, 3)
    rec = await wait_for_result(broker, parent.job_id, 60)
    assert rec.status == "succeeded", rec.meta
    assert rec.unwrap() == 5


async def test_a_job_of_naq_worker_dash_u_enqueues_to_that_server(nats_server, broker):
    """`naq worker -u URL` with another NAQ_NATS_URL in its environment: an async job (on the
    worker's own loop) and a sync one (in a job process) enqueued to the environment's server."""
    proc = worker_process(nats_server.url, "default", "-c", "2", "-u", nats_server.url,
                          env={"NAQ_NATS_URL": "nats://127.0.0.1:1"})
    try:
        q = Queue(broker).configure(max_retries=0, timeout=60)
        for fn in (jobs.async_enqueue_and_wait, jobs.enqueue_and_wait):
            rec = await wait_for_result(broker, (await q.enqueue(fn, 2, 3)).job_id, 60)
            assert rec.status == "succeeded", (fn.__name__, rec.meta)
            assert rec.unwrap() == 5
    finally:
        proc.terminate()
        proc.wait(30)
