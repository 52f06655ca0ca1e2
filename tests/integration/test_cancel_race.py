"""A cancel that loses the race to a run's result: the handle tells the result that stands.

``cancel_job`` marks a running job ``cancelled`` (revision-checked), then creates a ``cancelled``
result. If the run's own result is created between the two, that result stands, and the run's
``succeeded`` status goes over the mark. The status record the worker encoded before the mark
carries the older ``updated_at``, and status and result records reach a client through two
subscriptions, in either order. The test plays the worker's writes (no worker serves the queue)
around the real ``_mark_cancelled``, against a real server, in both orders a client may see them.
"""

from __future__ import annotations

import threading
import time

import naq_nb as nq
from naq_nb.client.loop import run_sync
from naq_nb.core.cancel import _mark_cancelled
from naq_nb.core.records import encode_result
from naq_nb.core.serialization import get_serializer, seal_record
from naq_nb.core.status import decode_status, with_status

import jobs

BOUND = 20.0


def _seen(fut, status: str) -> threading.Event:
    """An event set once ``fut`` reports ``status`` (checked at once and after every update)."""
    ev = threading.Event()

    def check(f) -> None:
        if f.status == status:
            ev.set()

    fut.on_update(check)
    check(fut)
    return ev


def _put_status(b, job_id: str, rec: dict, updated_at: float) -> None:
    """A status write as a worker's publish carries it: the record with the time it was encoded."""
    import json

    data = json.dumps({**rec, "updated_at": updated_at}).encode()
    run_sync(b.js.publish(b.layout.kv_subject(b.layout.status_bucket, job_id), data))


def _create_result(b, job_id: str, value) -> None:
    record = encode_result(get_serializer("pickle"), value, result_ttl=None)

    async def create() -> None:
        kv = await b.kv(b.layout.results_bucket)
        await kv.create(job_id, seal_record(record, job_id, b.settings.signing_key))

    run_sync(create())


def _running(client, b, job_id: str) -> dict:
    client.flush_sync()  # the job and its queued record are stored

    async def read() -> dict:
        kv = await b.kv(b.layout.status_bucket)
        return decode_status((await kv.get(job_id)).value)

    rec = with_status(run_sync(read()), "running", started_at=time.time(), worker="w1", attempts=1)
    _put_status(b, job_id, rec, time.time())
    return rec


def _a_running_future(nb_client):
    """A future whose job reads "running" (written by hand: no worker takes queue "nobody"), once
    the future has seen it: (future, broker, its running record)."""
    fut = nq.options(queue="nobody").submit(jobs.add, 1, 2)
    b = run_sync(nb_client.broker())
    running = _seen(fut, "running")
    rec = _running(nb_client, b, fut.job_id)
    assert running.wait(BOUND)
    return fut, b, rec


def test_status_cancelled_then_the_result_the_result_decides(nb_client):
    fut, b, rec = _a_running_future(nb_client)
    encoded = time.time()  # the run ends: its final status is encoded now, published just after the mark
    cancelled = _seen(fut, "cancelled")
    assert run_sync(_mark_cancelled(b, fut.job_id)) is not None
    assert cancelled.wait(BOUND)  # the client saw the mark first
    _put_status(b, fut.job_id, with_status(rec, "succeeded", finished_at=encoded), encoded)
    _create_result(b, fut.job_id, 3)  # before cancel_job's own create: this result stands

    assert fut.result(timeout=BOUND) == 3
    assert not fut.cancelled() and fut.status == "succeeded"


def test_result_then_a_late_cancelled_status_the_result_decides(nb_client):
    fut, b, rec = _a_running_future(nb_client)
    _create_result(b, fut.job_id, 3)
    assert fut.result(timeout=BOUND) == 3
    # The mark, dispatched after the result (another subscription), newer than the run's own status.
    _put_status(b, fut.job_id, with_status(rec, "cancelled", finished_at=time.time()), time.time())
    # Records of one subscription are handled in order: once a later one is seen, the mark was too.
    sentinel = nq.options(queue="nobody").submit(jobs.add, 2, 2)
    sentinel_seen = _seen(sentinel, "running")
    _running(nb_client, b, sentinel.job_id)
    assert sentinel_seen.wait(BOUND)

    assert not fut.cancelled() and fut.status == "succeeded"
    sentinel.cancel()
