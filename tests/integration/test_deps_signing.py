"""With signing on, a message nobody with the key made never writes a job's records through the
dependency path either: neither on the jobs subject (the gate parks or fails before the runner checks
signatures) nor as a copy published straight onto the waiting stream."""

from __future__ import annotations

import json

import pytest

from naq_nb.core.broker import Broker
from naq_nb.core.deps import parked_deps, sweep_waiting
from naq_nb.core.envelope import HEADER_META, HEADER_MSG_ID
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result

from helpers import eventually, failed_entries, good_meta
import jobs

KEY = b"k-deps-2026"


@pytest.fixture
async def keyed(settings):
    b = await Broker.connect(settings=settings.with_(signing_key=KEY))
    yield b
    await b.close()


@pytest.mark.parametrize("dep", ["never-enqueued", "a-waiting-job"])
async def test_an_unsigned_dependent_naming_a_real_job_is_refused_not_run_through_the_gate(keyed, start_worker, dep):
    # The gate failed it (dependency missing) or parked it (dependency pending) before any signature
    # check: the real job's status became failed / waiting and a failed result stood under its id.
    real = await Queue(keyed, "nobody").enqueue(jobs.add, 1, 1)
    pending = await Queue(keyed, "nobody").enqueue(jobs.add, 1, 2)
    meta = good_meta(real.job_id, fn="jobs.add", deps=[pending.job_id if dep == "a-waiting-job" else dep])
    headers = {HEADER_META: json.dumps(meta), HEADER_MSG_ID: "forged-dependent"}
    await keyed.js.publish(keyed.layout.queue_subject("default"), b"forged", headers=headers)
    await start_worker(settings=keyed.settings)
    (row,) = await failed_entries(keyed, "bad signature", 1)
    assert row["job_id"] == real.job_id and row["requeueable"] is False
    assert (await get_status(keyed, real.job_id))["status"] == "queued"
    assert await get_result(keyed, real.job_id) is None
    assert pending.job_id not in await parked_deps(keyed)


async def _a_child_parked_on_a_pending_parent(keyed, start_worker):
    """(parent, child): the parent queued where no worker serves it, the child parked on it."""
    parent = await Queue(keyed, "nobody").enqueue(jobs.add, 1, 1)
    child = await Queue(keyed).configure(depends_on=parent).enqueue(jobs.add, 2, 2)
    await start_worker(settings=keyed.settings)

    async def parked():
        return parent.job_id in await parked_deps(keyed)

    await eventually(parked, 15, "the child parked")
    return parent, child


async def test_an_unsigned_copy_on_the_waiting_stream_cannot_fail_a_parked_job(keyed, start_worker):
    parent, child = await _a_child_parked_on_a_pending_parent(keyed, start_worker)
    meta = good_meta(child.job_id, fn="jobs.add", deps=["never-enqueued"])
    forged = {HEADER_META: json.dumps(meta), HEADER_MSG_ID: "forged-copy"}
    await keyed.js.publish(keyed.layout.waiting_subject("never-enqueued"), b"forged", headers=forged)
    await sweep_waiting(keyed)  # a dependency with no record: its copies are settled
    assert "never-enqueued" not in await parked_deps(keyed), "the forged copy is dropped"
    assert (await get_status(keyed, child.job_id))["status"] == "waiting"
    assert await get_result(keyed, child.job_id) is None
    await start_worker("nobody", settings=keyed.settings)  # the real dependency ends: the child runs
    from naq_nb.core.results import wait_for_result
    assert (await wait_for_result(keyed, child.job_id, 30)).unwrap() == 4


async def _forge_succeeded(b, job_id):
    from naq_nb.core.status import encode_status, with_status

    kv = await b.kv(b.layout.status_bucket)
    await kv.put(job_id, encode_status(with_status(await get_status(b, job_id), "succeeded")))


async def test_a_succeeded_status_written_by_hand_fails_its_new_dependent_instead_of_running_it(keyed, start_worker):
    # Status records are not signed: with signing on, only the dependency's sealed result proves success.
    parent = await Queue(keyed, "nobody").enqueue(jobs.add, 1, 1)
    await _forge_succeeded(keyed, parent.job_id)
    child = await Queue(keyed).configure(depends_on=parent).enqueue(jobs.add, 2, 2)
    await start_worker(settings=keyed.settings)

    async def ended():
        return (await get_status(keyed, child.job_id))["status"] in ("failed", "succeeded")

    await eventually(ended, 20, "the child ended")
    res = await get_result(keyed, child.job_id)
    assert res is not None and not res.ok, "the child ran on a forged status"
    assert "no result sealed by a known key" in res.meta["error"], res.meta["error"]


async def test_a_succeeded_status_written_by_hand_does_not_release_a_parked_dependent(keyed, start_worker):
    parent, child = await _a_child_parked_on_a_pending_parent(keyed, start_worker)
    await _forge_succeeded(keyed, parent.job_id)
    await sweep_waiting(keyed)  # what a worker's sweep does every SWEEP_INTERVAL
    assert (await get_status(keyed, child.job_id))["status"] == "waiting"
    assert parent.job_id in await parked_deps(keyed)
    await start_worker("nobody", settings=keyed.settings)  # the real run proves it: the child runs then
    from naq_nb.core.results import wait_for_result

    assert (await wait_for_result(keyed, child.job_id, 30)).unwrap() == 4
