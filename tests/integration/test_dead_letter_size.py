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
