"""Fan-in: a job waiting on several jobs says which one it waits on now, as each ends."""

from __future__ import annotations

from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

from helpers import eventually
import jobs


async def test_a_fan_in_dependent_names_the_dependency_it_waits_on_now(broker, start_worker):
    # When its first dependency ended it was parked again on the next one, but its status record kept
    # naming the first (which had succeeded) as the one it waited on; nor was that record renewed, so
    # it could expire (NAQ_STATUS_TTL) while the job still waited, and the job be dropped at release.
    a = await Queue(broker, "qa").enqueue(jobs.add, 1, 1)
    b = await Queue(broker, "qb").enqueue(jobs.add, 2, 2)
    d = await Queue(broker).configure(depends_on=[a, b]).enqueue(jobs.add, 3, 3)
    await start_worker()

    async def waiting_on(job_id):
        async def check():
            st = await get_status(broker, d.job_id)
            return st["status"] == "waiting" and st.get("waiting_on") == job_id
        return check

    await eventually(await waiting_on(a.job_id), 15, "d waiting on a")
    first = await get_status(broker, d.job_id)
    await start_worker("qa")
    assert (await wait_for_result(broker, a.job_id, 15)).unwrap() == 2
    await eventually(await waiting_on(b.job_id), 15, "d waiting on b, once a succeeded")
    assert (await get_status(broker, d.job_id))["updated_at"] > first["updated_at"]
    await start_worker("qb")
    assert (await wait_for_result(broker, d.job_id, 15)).unwrap() == 6


async def test_a_release_cut_short_after_failing_a_dependent_still_stores_its_result(broker, start_worker):
    # The release wrote the dependent's "failed" status before its result; cut short in between (a
    # worker killed, a connection lost), the next release found the status no longer "waiting", took
    # the copy for a settled one and deleted it: the job read failed, with no result for ever.
    from naq_nb.core.cancel import cancel_job
    from naq_nb.core.deps import parked_deps, sweep_waiting
    from naq_nb.core.errors import DependencyFailedError, NaqConnectionError
    parent = await Queue(broker, "nobody").enqueue(jobs.add, 1, 1)
    child = await Queue(broker).configure(depends_on=parent).enqueue(jobs.add, 2, 2)
    await start_worker()

    async def parked():
        return parent.job_id in await parked_deps(broker)

    await eventually(parked, 15, "the child parked")
    publish = broker.publish

    async def result_write_lost(subject, *args, **kw):
        if subject == broker.layout.kv_subject(broker.layout.results_bucket, child.job_id):
            raise NaqConnectionError("connection lost (injected)")
        return await publish(subject, *args, **kw)

    broker.publish = result_write_lost
    try:
        assert await cancel_job(broker, parent.job_id)  # its release of the child is cut short
    finally:
        broker.publish = publish
    await sweep_waiting(broker)  # (every worker runs it at start and every 30 s)
    with __import__("pytest").raises(DependencyFailedError, match="was cancelled"):
        (await wait_for_result(broker, child.job_id, 10)).unwrap()
    assert (await get_status(broker, child.job_id))["status"] == "failed"
