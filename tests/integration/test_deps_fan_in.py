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
