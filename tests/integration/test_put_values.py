"""``nq.put`` values in a worker: fetched by the worker (once for the jobs that want them at once,
after the body's signature check), unpickled by the job process that runs the job, never by the
worker's own process (a 150 MB value at 4 slots peaked the worker at 2.1 GB: it held the fetched
bytes, the unpickled value and a pickled copy of the call per job)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal

import pytest

from naq_nb.core import blobcopies, blobs
from naq_nb.core.broker import Broker
from naq_nb.core.errors import JobNotFinishedError, WorkerProcessDied
from naq_nb.core.procpool import ProcessPool
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result
from naq_nb.core.serialization import PickleSerializer

import jobs
from helpers import dead_lettered

MB = 1024 * 1024


def pids_in(path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Names of the put objects this process downloads; starts from an empty cache (a hit is no download)."""
    monkeypatch.setattr(blobcopies, "_cache", type(blobcopies._cache)())
    seen: list[str] = []
    resolve = blobs.resolve_buffer

    async def counted(broker, ref, *args, **kwargs):
        seen.append(ref.name)
        return await resolve(broker, ref, *args, **kwargs)

    monkeypatch.setattr(blobs, "resolve_buffer", counted)
    return seen


async def test_a_put_value_is_unpickled_in_the_job_process_only(broker, start_worker, tmp_path, downloads):
    record = tmp_path / "pids"
    ref = await blobs.put_value(broker, jobs.PidRecorder(str(record), b"v" * MB))
    await start_worker(concurrency=2)  # (in this process: the worker's own pid is this test's)
    q = Queue(broker)
    runs = [await q.enqueue(jobs.recorder_seen, ref) for _ in range(3)]
    seen = [(await wait_for_result(broker, j.job_id, 60)).unwrap() for j in runs]
    assert all(s[1:] == ("PidRecorder", MB) for s in seen), seen
    job_pids = {s[0] for s in seen}
    assert os.getpid() not in job_pids, "the jobs ran in job processes"
    unpickled_by = pids_in(record)
    assert os.getpid() not in unpickled_by, "the worker's own process unpickled the nq.put value"
    assert sorted(unpickled_by) == sorted(s[0] for s in seen), "once per job, by the process that ran it"
    assert downloads == [ref.name], "fetched once by the worker"


async def test_an_async_job_over_a_put_value_gets_the_value_on_the_workers_loop(broker, start_worker, tmp_path):
    record = tmp_path / "pids"
    ref = await blobs.put_value(broker, jobs.PidRecorder(str(record), b"a" * 1000))
    await start_worker(concurrency=1)
    q = Queue(broker)
    for n in (1, 2):
        job = await q.enqueue(jobs.async_recorder_seen, ref)
        pid, kind, size = (await wait_for_result(broker, job.job_id, 60)).unwrap()
        assert (pid, kind, size) == (os.getpid(), "PidRecorder", 1000), "run on the worker's loop, with the value"
        assert pids_in(record).count(os.getpid()) == n  # (where an async job runs, there its values are unpickled)
    # The first call met a job process, which found the function async; the second did not.
    assert len([p for p in pids_in(record) if p != os.getpid()]) == 1


async def test_a_thread_worker_gives_jobs_their_put_values(broker, start_worker, tmp_path):
    ref = await blobs.put_value(broker, jobs.PidRecorder(str(tmp_path / "pids"), b"t" * 1000))
    await start_worker(execution="threads")
    job = await Queue(broker).enqueue(jobs.recorder_seen, ref)
    assert (await wait_for_result(broker, job.job_id, 60)).unwrap() == (os.getpid(), "PidRecorder", 1000)


async def test_a_missing_put_value_fails_the_job_naming_it(broker, start_worker):
    ref = await blobs.put_value(broker, os.urandom(2 * MB))
    await blobs.delete_value(broker, ref)
    await start_worker()
    job = await Queue(broker).enqueue(jobs.sha256_of, ref)
    rec = await wait_for_result(broker, job.job_id, 60)
    assert rec.status == "failed", rec
    error = rec.meta["error"]
    assert "BlobError" in error and "is missing" in error and ref.name in error, error


async def test_a_forged_body_over_a_put_value_is_rejected_before_the_value_is_fetched(
    settings, broker, start_worker, downloads
):
    key = settings.with_(signing_key=b"s3cret")
    await start_worker(settings=key)
    good = await Broker.connect(settings=key)
    wrong = await Broker.connect(settings=settings.with_(signing_key=b"other"))
    try:
        value = os.urandom(MB)
        ref = await blobs.put_value(broker, value)
        unsigned = await Queue(broker).enqueue(jobs.sha256_of, ref)
        forged = await Queue(wrong).enqueue(jobs.sha256_of, ref)
        reasons = await dead_lettered(good, [unsigned.job_id, forged.job_id])
        assert "not signed" in reasons[unsigned.job_id] and "does not verify" in reasons[forged.job_id]
        for jid in (unsigned.job_id, forged.job_id):
            with pytest.raises(JobNotFinishedError):  # nothing written under the ids they name
                await wait_for_result(good, jid, 0)
        assert downloads == [], "an object was fetched for a body whose signature does not verify"
        signed = await Queue(good).enqueue(jobs.sha256_of, ref)
        assert (await wait_for_result(good, signed.job_id, 60)).unwrap() == hashlib.sha256(value).hexdigest()
        assert downloads == [ref.name]
    finally:
        await good.close()
        await wrong.close()


async def test_jobs_that_share_a_put_value_at_once_download_it_once(broker, start_worker, tmp_path, downloads):
    ref = await blobs.put_value(broker, jobs.PidRecorder(str(tmp_path / "pids"), os.urandom(8 * MB)))
    q = Queue(broker)
    runs = [await q.enqueue(jobs.recorder_seen, ref, 1.0) for _ in range(4)]  # queued before the worker starts
    await start_worker(concurrency=4)
    seen = [(await wait_for_result(broker, j.job_id, 60)).unwrap() for j in runs]
    assert [s[1:] for s in seen] == [("PidRecorder", 8 * MB)] * 4
    assert len({s[0] for s in seen}) == 4, "the four ran at once, each in its own job process"
    assert downloads == [ref.name], f"{len(downloads)} downloads of one value"


async def test_a_big_put_value_reaches_the_job_process_whole(broker, start_worker):
    data = os.urandom(48 * MB)  # many pipe buffers: sent a segment at a time
    ref = await blobs.put_value(broker, data)
    await start_worker(concurrency=2)
    q = Queue(broker)
    runs = [await q.enqueue(jobs.sha256_of, ref) for _ in range(2)]
    for j in runs:
        assert (await wait_for_result(broker, j.job_id, 120)).unwrap() == hashlib.sha256(data).hexdigest()


async def test_a_job_process_dying_over_a_put_value_fails_its_job_and_the_next_runs(broker, start_worker):
    ref = await blobs.put_value(broker, os.urandom(4 * MB))
    await start_worker(concurrency=1)
    q = Queue(broker)
    dying = await q.enqueue(jobs.exit_over, ref, 7)
    after = await q.enqueue(jobs.sha256_of, ref)
    rec = await wait_for_result(broker, dying.job_id, 60)
    assert rec.status == "failed" and "worker process died: exited with code 7" in rec.meta["error"], rec.meta
    assert len((await wait_for_result(broker, after.job_id, 60)).unwrap()) == 64


async def test_a_job_process_killed_while_its_put_value_is_sent_is_reported_dead():
    pool = ProcessPool(1, PickleSerializer())
    pool.start()
    try:
        assert await pool.wait_ready(60)
        child = await pool.acquire()
        body = PickleSerializer().dumps_call(len, (b"",), {})
        objects = {"ab" * 32: os.urandom(32 * MB)}
        call = asyncio.ensure_future(pool.call(child, "j1", "q", 1, body, None, objects=objects))
        await asyncio.sleep(0)  # the frame and the first segment are out: the child is reading
        assert not call.done()
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(WorkerProcessDied, match="signal 9"):
            await asyncio.wait_for(call, 30)
    finally:
        await pool.close()
