"""A parked dependent whose message nearly fills max_payload still fails cleanly when its dependency
fails: its failed-stream copy moves its body to the object store, as a worker's dead letter does."""

from __future__ import annotations

import json

import pytest

from naq_nb.core.cancel import cancel_job
from naq_nb.core.envelope import HEADER_META
from naq_nb.core.errors import DependencyFailedError
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

from helpers import eventually, good_meta
import jobs


async def test_a_dependent_near_max_payload_fails_with_its_dependency_and_can_be_requeued(broker, start_worker):
    # Its body fit inline at enqueue (within max_payload less 1 KiB), but not beside the failure record
    # and headers of its failed entry: the release published a message over max_payload, the server
    # closed the releasing connection ("maximum payload exceeded"), and the dependent stayed "waiting"
    # (every sweep tried again, and lost its connection again).
    parent = await Queue(broker, "nobody").enqueue(jobs.add, 1, 1)
    big = b"x" * (broker.max_payload - 1980)
    child = await Queue(broker).configure(depends_on=parent, name="n" * 400).enqueue(jobs.echo_value, big)
    await start_worker()

    async def parked():
        return (await broker.js.stream_info(broker.layout.waiting_stream)).state.messages == 1

    await eventually(parked, 15, "the child parked")
    assert await cancel_job(broker, parent.job_id)
    rec = await wait_for_result(broker, child.job_id, 15)
    with pytest.raises(DependencyFailedError, match="was cancelled"):
        rec.unwrap()
    assert broker.nc.is_connected
    (entry,) = await list_failed(broker)
    assert entry["job_id"] == child.job_id and entry["requeueable"]
    assert await requeue_failed(broker, child.job_id) == child.job_id  # its dependency is cancelled: fails again
    with pytest.raises(DependencyFailedError, match="was cancelled"):
        (await wait_for_result(broker, child.job_id, 15)).unwrap()


async def test_a_hand_published_dependent_near_max_payload_parks_without_killing_the_worker(broker, start_worker):
    # Its parked copy carries a longer message id than it came with: over max_payload, so the server
    # closed the worker's connection and the worker stopped ("closed for good"); restarted, it met the
    # redelivered message again. Now the body moves to the object store as it parks.
    parent = await Queue(broker, "nobody").enqueue(jobs.add, 1, 1)
    meta = json.dumps(good_meta("near-limit", fn="jobs.add", deps=[parent.job_id]))
    body = b"x" * (broker.max_payload - len(meta) - 60)  # garbage: it fails once it runs, naming why
    await broker.js.publish(broker.layout.queue_subject("default"), body, headers={HEADER_META: meta})
    w = await start_worker()

    async def parked():
        return (await broker.js.stream_info(broker.layout.waiting_stream)).state.messages == 1

    await eventually(parked, 15, "the job parked")
    assert w.state not in ("stopping", "stopped") and w.broker.nc.is_connected
    await start_worker("nobody")
    rec = await wait_for_result(broker, "near-limit", 15)
    assert rec.status == "failed" and "cannot unpickle the job payload" in rec.meta["error"]
