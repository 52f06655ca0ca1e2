"""Forged and hostile messages and records (a third audit): nothing unverified is written under a job's
id, a signed message runs only on its own queue and only once, and deep nesting is an unreadable
message or record, never a loop, a hang or a retried worker error."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import time

import pytest

from naq_nb.core import blobs
from naq_nb.core.broker import Broker
from naq_nb.core.envelope import HEADER_META, HEADER_MSG_ID
from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError, SerializationError
from naq_nb.core.job import JobOptions
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result
from naq_nb.core.serialization import pack_record

import sec_jobs
from helpers import failed_entries, wire_message

KEY = b"k-forged-2026"
DEEP = "[" * 5000


async def _lines(path, n: int) -> list[str]:
    for _ in range(600):
        if path.exists() and len(path.read_text().splitlines()) >= n:
            break
        await asyncio.sleep(0.05)
    return path.read_text().splitlines() if path.exists() else []


async def test_an_unsigned_message_naming_a_waiting_job_never_fails_it(settings, start_worker, tmp_path):
    signed = settings.with_(signing_key=KEY)
    b = await Broker.connect(settings=signed)
    marker = tmp_path / "runs.txt"
    try:
        # The forged message is taken first; the real one (its id known ahead: read from the
        # status bucket, say) waits behind it on the same queue.
        await b.ensure_layout()
        forged = {"id": "victim-1", "q": "later"}
        await b.js.publish(b.layout.queue_subject("later"), b"junk", headers={HEADER_META: json.dumps(forged)})
        q = Queue(b, "later")
        victim = await q.enqueue_job(q.make_job(sec_jobs.append_line, (str(marker), "victim"), {},
                                                JobOptions(job_id="victim-1")))
        await start_worker(["later"], settings=signed, concurrency=1)
        rows = await failed_entries(b, "bad signature")
        assert rows[0]["job_id"] == victim.job_id
        assert (await wait_for_result(b, victim.job_id, 30)).unwrap() == "victim"  # the real job ran
        assert await _lines(marker, 1) == ["victim"]
    finally:
        await b.close()


async def test_a_forged_header_naming_another_serializer_writes_nothing_either(settings, broker, start_worker):
    signed = settings.with_(signing_key=KEY)
    await start_worker(settings=signed)
    victim = await Queue(broker, "nobody").enqueue(sec_jobs.append_line, "/dev/null")
    forged = {"id": victim.job_id, "q": "default", "ser": "json"}
    await broker.nc.publish(broker.layout.queue_subject("default"), b"{}", headers={HEADER_META: json.dumps(forged)})
    await failed_entries(broker, "bad signature")
    with pytest.raises(JobNotFinishedError):  # still queued: nothing was written under its id
        await wait_for_result(broker, victim.job_id, 0)


async def test_a_signed_message_moved_to_another_queue_never_runs(settings, start_worker, tmp_path):
    signed = settings.with_(signing_key=KEY)
    b = await Broker.connect(settings=signed)
    marker = tmp_path / "runs.txt"
    try:
        headers, body = await wire_message(
            b, "held", lambda: Queue(b, "held").enqueue(sec_jobs.append_line, str(marker))
        )
        await start_worker(settings=signed)
        moved = {**headers, HEADER_MSG_ID: "moved-1"}
        await b.js.publish(b.layout.queue_subject("default"), body, headers=moved)
        rows = await failed_entries(b, "signed for queue 'held'")
        assert rows[0]["queue"] == "default"
        assert not marker.exists()
        assert await Queue(b, "held").count() == 1  # the original waits on its own queue, untouched
    finally:
        await b.close()


async def test_a_signed_message_replayed_under_a_new_id_runs_once(settings, start_worker, tmp_path):
    signed = settings.with_(signing_key=KEY)
    b = await Broker.connect(settings=signed)
    marker = tmp_path / "runs.txt"
    try:
        headers, body = await wire_message(
            b, "default", lambda: Queue(b).enqueue_job(
                Queue(b).make_job(sec_jobs.slow_line, (str(marker), "ran", 1.5), {}, JobOptions(result_ttl=1))
            )
        )
        jid = json.loads(headers[HEADER_META])["id"]
        await start_worker(settings=signed)
        assert await _lines(marker, 1) == ["start"]  # running now: a replay meets a "running" record
        await b.js.publish(b.layout.queue_subject("default"), body, headers={**headers, HEADER_MSG_ID: "replay-1"})
        assert (await wait_for_result(b, jid, 30)).unwrap() == "ran"
        await failed_entries(b, f"a copy of job {jid}")
        for _ in range(100):  # its result_ttl of 1 s passes; its status record stays
            try:
                await wait_for_result(b, jid, 0)
            except JobNotFoundError:
                break
            await asyncio.sleep(0.1)
        await b.js.publish(b.layout.queue_subject("default"), body, headers={**headers, HEADER_MSG_ID: "replay-2"})
        await failed_entries(b, f"a copy of job {jid}", 2)
        assert marker.read_text().splitlines() == ["start", "ran"], "the job ran once"
    finally:
        await b.close()


@pytest.mark.parametrize("meta", [DEEP, '{"a":' * 5000, '{"id":"j1","q":"default","retry":' + DEEP])
async def test_a_deeply_nested_header_is_dead_lettered_at_once(broker, start_worker, meta):
    w = await start_worker(concurrency=1)
    await broker.js.publish(broker.layout.queue_subject("default"), b"x", headers={HEADER_META: meta})
    rows = await failed_entries(broker, "malformed message")
    assert rows[0]["attempts"] == 1
    job = await Queue(broker).enqueue(sec_jobs.append_line, "/dev/null", "after")
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == "after"  # the queue goes on
    assert w.stats["malformed"] == 1


async def test_a_deeply_nested_result_record_is_unreadable_not_a_hang(broker, start_worker):
    job = await Queue(broker, "nobody").enqueue(sec_jobs.append_line, "/dev/null")
    kv = await broker.kv(broker.layout.results_bucket)
    await kv.put(job.job_id, (DEEP + "\n").encode())
    with pytest.raises(SerializationError, match="malformed record"):
        (await wait_for_result(broker, job.job_id, 10)).unwrap()


async def test_a_worker_meeting_a_deeply_nested_result_record_ends_the_job(settings, broker, start_worker):
    job = await Queue(broker).enqueue(sec_jobs.append_line, "/dev/null")
    kv = await broker.kv(broker.layout.results_bucket)
    await kv.put(job.job_id, (DEEP + "\n").encode())
    w = await start_worker(settings=settings.with_(signing_key=KEY))
    for _ in range(600):
        if (await Queue(broker).count()) == 0 and not w.running:
            break
        await asyncio.sleep(0.05)
    status = await get_status(broker, job.job_id)
    assert status["status"] == "failed" and "unreadable" in status["error"]


@pytest.mark.parametrize("execution", ["processes", "threads"])
async def test_a_json_result_nested_too_deeply_fails_its_job_once(settings, start_worker, tmp_path, execution):
    js = settings.with_(serializer="json", json_allowed=("sec_jobs",))
    b = await Broker.connect(settings=js)
    marker = tmp_path / "runs.txt"
    try:
        await start_worker(settings=js, execution=execution)
        job = await Queue(b).enqueue("sec_jobs:nested_list", str(marker), 5000)
        rec = await wait_for_result(b, job.job_id, 30)
        assert rec.status == "failed" and "nested too deeply" in rec.meta["error"]
        assert marker.read_text().count("ran") == 1
    finally:
        await b.close()


async def test_a_json_client_never_unpickles_an_offloaded_result(settings, tmp_path):
    js = settings.with_(serializer="json")
    b = await Broker.connect(settings=js)
    marker = tmp_path / "pwned"
    try:
        await b.ensure_layout()
        job = await Queue(b, "nobody").enqueue("sec_jobs:touch", str(marker))
        inner = pack_record({"status": "succeeded", "ser": "pickle"}, pickle.dumps(sec_jobs.Evil(marker)))
        bucket = b.layout.result_objects_bucket
        store = await blobs._store(b, bucket)
        await store.put("forged", inner)
        ref = {"bucket": bucket, "name": "forged", "size": len(inner), "sha256": hashlib.sha256(inner).hexdigest()}
        kv = await b.kv(b.layout.results_bucket)
        await kv.put(job.job_id, pack_record({"status": "succeeded", "finished_at": time.time(), "blob": ref}))
        with pytest.raises(SerializationError, match="only accepts JSON"):
            (await wait_for_result(b, job.job_id, 10)).unwrap()
        assert not marker.exists()
    finally:
        await b.close()


async def test_a_refused_entry_is_never_requeued_over_the_real_job(settings, start_worker, tmp_path):
    from naq_nb.core.failed import list_failed, requeue_failed
    signed = settings.with_(signing_key=KEY)
    b = await Broker.connect(settings=signed)
    try:
        await b.ensure_layout()
        forged = {"id": "victim-2", "q": "default"}
        await b.js.publish(b.layout.queue_subject("default"), b"junk", headers={HEADER_META: json.dumps(forged)})
        q = Queue(b)
        victim = await q.enqueue_job(q.make_job(sec_jobs.append_line, (str(tmp_path / "runs"), "real"), {},
                                                JobOptions(job_id="victim-2")))
        await start_worker(settings=signed, concurrency=1)
        await failed_entries(b, "bad signature")
        assert (await wait_for_result(b, victim.job_id, 30)).unwrap() == "real"
        [entry] = await list_failed(b)
        assert entry["job_id"] == "victim-2" and entry["requeueable"] is False
        with pytest.raises(SerializationError, match="was refused, not run"):
            await requeue_failed(b, "victim-2")
        assert (await wait_for_result(b, victim.job_id, 0)).unwrap() == "real"  # its result stands
    finally:
        await b.close()
