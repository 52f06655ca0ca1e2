"""A message whose body nearly fills max_payload still reaches the failed stream when it fails (its
body moves to the object store beside the failure record); it is never redelivered in a loop because
its copy did not fit."""

from __future__ import annotations

import asyncio
import json

from naq_nb.core import blobs
from naq_nb.core.failed import list_failed


async def _wait_failed(broker, job_id: str, timeout: float = 60.0) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        found = [f for f in await list_failed(broker) if f["job_id"] == job_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the failed stream")


async def test_a_bad_message_near_max_payload_is_dead_lettered_once(broker, start_worker):
    meta = json.dumps({"v": 1, "id": "bigbad", "q": "default", "fn": "x:y", "ser": "pickle", "rttl": "abc"})
    headers = {"Naq-Meta": meta, "Nats-Msg-Id": "bigbad"}
    body = b"x" * (broker.max_payload - len(meta) - 200)  # fits alone, not beside a failure record
    await broker.js.publish(broker.layout.queue_subject("default"), body, headers=headers)
    w = await start_worker()
    entry = await _wait_failed(broker, "bigbad")
    assert "malformed" in entry["reason"] and "rttl" in entry["reason"]
    assert w.stats.get("malformed") == 1
    info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name("default"))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0, "filed once, not redelivered"
    names = [o.name for o in await (await blobs._store(broker, broker.layout.objects_bucket)).list()]
    assert any(n.startswith("job.bigbad.") for n in names), "its body went to the object store"


async def test_an_exception_with_a_message_near_max_payload_fails_the_job_once(broker, start_worker):
    # Its error line and traceback no longer fit a status record or a failed-stream copy: they are cut
    # (the exception itself travels whole in the result). Before, recording the failure raised, the
    # worker ran the job again, and after three runs it ended as "lost", its ValueError gone.
    import jobs
    from naq_nb.core.queue import Queue, get_status
    from naq_nb.core.results import wait_for_result
    import pytest

    await start_worker()
    n = broker.max_payload + 1000
    j = await Queue(broker).enqueue(jobs.boom_big, n)
    rec = await wait_for_result(broker, j.job_id, 60)
    assert rec.status == "failed" and rec.meta["attempts"] == 1
    with pytest.raises(ValueError) as info:
        rec.unwrap()
    assert len(str(info.value)) == n  # the exception, whole
    st = await get_status(broker, j.job_id)
    assert st["status"] == "failed" and st["error"].startswith("ValueError: EEE") and "more characters" in st["error"]
    entry = await _wait_failed(broker, j.job_id)
    assert entry["reason"].startswith("ValueError: EEE") and len(entry["reason"]) < 5000
