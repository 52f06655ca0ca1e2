"""Enqueue, run, results, status events, options apart from kwargs, cancel, purge."""

import asyncio
import json

import pytest

from nats.js.errors import KeyWrongLastSequenceError

from naq_nb.core import cancel as core_cancel
from naq_nb.core import runner
from naq_nb.core.errors import (
    ConcurrentUpdateError,
    JobCancelledError,
    JobExecutionError,
    JobNotFinishedError,
    JobNotFoundError,
)
from naq_nb.core.broker import Broker
from naq_nb.core.cancel import cancel_job
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

import jobs


async def result(broker, job, timeout=30):  # generous: a loaded 2-core CI box stalls at times
    return (await wait_for_result(broker, job.job_id, timeout)).unwrap()


async def test_sync_async_lambda_and_closure(broker, start_worker):
    await start_worker(concurrency=4)
    q = Queue(broker)
    factor = 7
    j1 = await q.enqueue(jobs.add, 1, 2)
    j2 = await q.enqueue(jobs.async_add, 3, 4)
    j3 = await q.enqueue(lambda x: x * factor, 6)
    assert [await result(broker, j) for j in (j1, j2, j3)] == [3, 7, 42]


@pytest.mark.parametrize("execution", ["processes", "threads"])
async def test_a_function_given_by_its_import_path_runs_with_the_pickle_serializer(broker, start_worker, execution):
    # The name is imported where the job runs (the producer need not have the module); a name that
    # does not import fails the job saying which, and it is not retried.
    await start_worker(execution=execution)
    q = Queue(broker)
    by_colon, dotted = await q.enqueue("jobs:add", 2, 3), await q.enqueue("jobs.add", 4, 5)
    assert (await wait_for_result(broker, by_colon.job_id, 30)).unwrap() == 5
    assert (await wait_for_result(broker, dotted.job_id, 30)).unwrap() == 9
    missing = await q.enqueue("no_such_module_here:f")
    rec = await wait_for_result(broker, missing.job_id, 30)
    assert rec.status == "failed" and "cannot import 'no_such_module_here:f'" in rec.meta["error"]
    assert rec.meta.get("attempts", 1) == 1


async def test_options_never_collide_with_function_kwargs(broker, start_worker):
    await start_worker()
    q = Queue(broker).configure(timeout=30, max_retries=1)
    j = await q.enqueue(jobs.takes_reserved, 1, timeout=3, queue="mine", max_retries=9)
    assert await result(broker, j) == {"x": 1, "timeout": 3, "queue": "mine", "max_retries": 9}
    assert j.timeout == 30 and j.max_retries == 1


async def test_remote_exception_keeps_type_and_traceback(broker, start_worker):
    await start_worker()
    j = await Queue(broker).enqueue(jobs.custom_fail)
    rec = await wait_for_result(broker, j.job_id, 30)
    with pytest.raises(jobs.CustomError) as ei:
        rec.unwrap()
    assert isinstance(ei.value, JobExecutionError), "naq-style except JobExecutionError also catches it"
    assert ei.value.code == 42 and "custom_fail" in ei.value.remote_traceback
    st = await get_status(broker, j.job_id)
    assert st["status"] == "failed" and "CustomError" in st["error"]


@pytest.mark.parametrize("execution, fn, args, running_after, states", [
    ("threads", jobs.add, (1, 1), 60.0, ["queued", "running", "succeeded"]),
    # In a child process a job that ends within RUNNING_AFTER is never recorded running (one write less).
    ("processes", jobs.add, (1, 1), 60.0, ["queued", "succeeded"]),
    ("processes", jobs.sleep_for, (1.0,), 0.05, ["queued", "running", "succeeded"]),
    ("processes", jobs.async_add, (1, 1), 60.0, ["queued", "running", "succeeded"]),  # runs on the worker's loop
])
async def test_status_watcher_sees_every_state(broker, start_worker, monkeypatch, execution, fn, args,
                                               running_after, states):
    monkeypatch.setattr(runner, "RUNNING_AFTER", running_after)
    await start_worker(execution=execution)
    seen: list[str] = []
    done = asyncio.Event()
    q = Queue(broker)
    job = q.make_job(fn, args)

    async def on(msg):
        seen.append(json.loads(msg.data)["status"])
        if seen[-1] == "succeeded":
            done.set()
    sub = await broker.nc.subscribe(broker.layout.kv_subject(broker.layout.status_bucket, job.job_id), cb=on)
    await q.enqueue_job(job)
    await asyncio.wait_for(done.wait(), 30)
    await sub.unsubscribe()
    assert seen == states


async def test_enqueue_many_pipelined_and_idempotent_key(broker, start_worker):
    q = Queue(broker)
    many = await q.enqueue_many([(jobs.add, (i, i), {}) for i in range(50)])
    assert len({j.sequence for j in many}) == 50
    a = await q.configure(key="nightly-report").enqueue(jobs.add, 1, 1)
    b = await q.configure(key="nightly-report").enqueue(jobs.add, 1, 1)
    assert a.job_id == b.job_id == "nightly-report" and not a.duplicate and b.duplicate
    assert await q.count() == 51
    await start_worker(concurrency=8)
    assert [await result(broker, j) for j in many] == [2 * i for i in range(50)]


async def test_fetch_without_waiting_and_unknown_id(broker):
    j = await Queue(broker).enqueue(jobs.add, 1, 1)
    with pytest.raises(JobNotFinishedError):
        await wait_for_result(broker, j.job_id, 0)
    with pytest.raises(JobNotFoundError, match="no job with id 'nope'"):
        await wait_for_result(broker, "nope", 1)


async def test_cancel_queued_job_removes_it(broker, start_worker, tmp_path):
    q = Queue(broker)
    j = await q.enqueue(jobs.mark, str(tmp_path / "ran"), "x")
    assert await cancel_job(broker, j.job_id, j.sequence)
    assert await q.count() == 0
    with pytest.raises(JobCancelledError):
        (await wait_for_result(broker, j.job_id, 5)).unwrap()
    assert not await cancel_job(broker, j.job_id), "a second cancel reports it already ended"
    await start_worker()
    marker = await q.enqueue(jobs.add, 0, 0)
    await result(broker, marker)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("sent", ["alone", "in_a_batch"])
async def test_a_cancel_that_knows_no_sequence_still_removes_the_queued_job(broker, start_worker, tmp_path, sent):
    # Another process cancels (no handle, so no sequence) a job whose status record carries none (sent
    # alone its record goes out before the job; a batch's never has one). The message is found in its
    # queue and deleted: a worker started later (no cancel notice reached it) must not run it.
    q = Queue(broker, "later")
    ran = tmp_path / "ran"
    if sent == "alone":
        j = await q.enqueue(jobs.mark, str(ran), "x")
    else:
        j = (await q.enqueue_many([(jobs.add, (1, 1), {}), (jobs.mark, (str(ran), "x"), {})]))[1]
    assert "seq" not in await get_status(broker, j.job_id)
    assert await cancel_job(broker, j.job_id)  # no sequence: as another process would call it
    assert await q.count() == (0 if sent == "alone" else 1)
    await start_worker("later")
    marker = await q.enqueue(jobs.add, 0, 0)
    await result(broker, marker)
    assert not ran.exists(), "a cancelled job ran on a worker started after the cancel"
    with pytest.raises(JobCancelledError):
        (await wait_for_result(broker, j.job_id, 5)).unwrap()


async def test_cancel_running_async_job(broker, start_worker):
    w = await start_worker()
    j = await Queue(broker).enqueue(jobs.async_sleep_for, 60)
    while j.job_id not in w.running:
        await asyncio.sleep(0.02)
    assert await cancel_job(broker, j.job_id)
    rec = await wait_for_result(broker, j.job_id, 30)
    assert rec.status == "cancelled"
    st = await get_status(broker, j.job_id)
    assert st["status"] == "cancelled"


async def _keep_writing_status(broker, job_id, seconds, writing: asyncio.Event | None = None):
    """Like a busy running job: revision-checked status writes back to back, until one loses or time is up.
    ``writing`` is set once the first write is in."""
    kv = await broker.kv(broker.layout.status_bucket)
    entry = await kv.get(job_id)
    rev, writes = entry.revision, 0
    rec = {**json.loads(entry.value), "status": "running", "progress": 0}
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        rec["progress"] += 1
        try:
            rev = await kv.update(job_id, json.dumps(rec).encode(), last=rev)
        except KeyWrongLastSequenceError:
            break  # the cancel got in
        writes += 1
        if writing is not None:
            writing.set()
    return writes


async def test_cancel_retries_while_a_live_job_keeps_writing_its_status(broker):
    # It used to give up after 10 lost races and answer False ("already ended") for a live job.
    j = await Queue(broker).enqueue(jobs.add, 1, 2)
    writing = asyncio.Event()
    writer = asyncio.create_task(_keep_writing_status(broker, j.job_id, 1.5, writing))
    await asyncio.wait_for(writing.wait(), 30)  # the job is live (writing) before the cancel reads
    assert await cancel_job(broker, j.job_id) is True
    assert await writer > 0
    assert (await get_status(broker, j.job_id))["status"] == "cancelled"


async def test_cancel_that_keeps_losing_raises_instead_of_answering_false(broker, monkeypatch):
    monkeypatch.setattr(core_cancel, "CANCEL_RETRY_SECONDS", 0.3)
    j = await Queue(broker).enqueue(jobs.add, 1, 2)
    writer = asyncio.create_task(_keep_writing_status(broker, j.job_id, 30))
    await asyncio.sleep(0)
    try:
        ok = await cancel_job(broker, j.job_id)
    except ConcurrentUpdateError as exc:
        assert j.job_id in str(exc) and "try again" in str(exc)
        writer.cancel()
    else:  # the cancel won a race: then it is really cancelled
        assert ok is True
        assert (await get_status(broker, j.job_id))["status"] == "cancelled"
        await asyncio.wait_for(writer, 30)


async def test_purge_counts(broker):
    q = Queue(broker, "purgeme")
    await q.enqueue_many([(jobs.add, (1, 1), {})] * 5)
    await Queue(broker, "other").enqueue(jobs.add, 1, 1)
    assert await q.purge() == 5
    assert await q.count() == 0 and await Queue(broker, "other").count() == 1


async def test_timeouts_async_and_sync(broker, start_worker):
    await start_worker(concurrency=2)
    q = Queue(broker).configure(timeout=0.3)
    a = await q.enqueue(jobs.async_sleep_for, 30)
    s = await q.enqueue(jobs.sleep_for, 2)
    for j in (a, s):
        rec = await wait_for_result(broker, j.job_id, 30)
        assert rec.status == "failed" and "timed out after 0.3s" in rec.meta["error"]


@pytest.mark.parametrize("execution", ["processes", "threads"])
async def test_a_jobs_own_timeout_error_fails_as_itself_not_as_its_timeout(broker, start_worker, execution):
    # Job code that raises TimeoutError itself, well within its timeout, is not reported as timed out
    # (nor retried as one): its own exception, type and message are what the record keeps.
    await start_worker(concurrency=2, execution=execution)
    q = Queue(broker).configure(timeout=30, max_retries=0)
    for fn in (jobs.raise_own_timeout, jobs.async_raise_own_timeout):
        j = await q.enqueue(fn)
        rec = await wait_for_result(broker, j.job_id, 30)
        assert rec.status == "failed", fn
        assert "my own deadline passed" in rec.meta["error"] and "timed out after" not in rec.meta["error"], rec.meta
        assert rec.meta["error"].startswith("TimeoutError"), rec.meta["error"]


async def test_progress_and_output_reach_status(broker, start_worker):
    await start_worker()
    j = await Queue(broker).enqueue(jobs.with_progress, 3)
    assert await result(broker, j) == 3
    st = await get_status(broker, j.job_id)
    assert st["status"] == "succeeded"
    assert (st["progress"], st["total"], st["message"]) == (3, 3, "step 3")
    assert st["logs"] == ["line 1", "line 2", "line 3"], "prints inside the job are captured, not lost"


async def test_several_queues_one_worker(broker, start_worker):
    await start_worker(["a", "b"])
    ja = await Queue(broker, "a").enqueue(jobs.add, 1, 0)
    jb = await Queue(broker, "b").enqueue(jobs.add, 2, 0)
    assert await result(broker, ja) == 1 and await result(broker, jb) == 2


async def test_sync_jobs_run_in_threads_concurrently(broker, start_worker):
    await start_worker(concurrency=4)
    q = Queue(broker)
    js = [await q.enqueue(jobs.sleep_for, 0.5) for _ in range(4)]
    recs = [await wait_for_result(broker, j.job_id, 30) for j in js]
    starts = sorted(r.meta["started_at"] for r in recs)
    finishes = sorted(r.meta["finished_at"] for r in recs)
    assert starts[-1] < finishes[0], "all four sync jobs were running at the same time"


async def test_layout_created_idempotently_under_races(settings):
    from naq_nb.core.broker import Broker
    brokers = [await Broker.connect(settings=settings) for _ in range(6)]
    try:
        await asyncio.gather(*(b.ensure_layout() for b in brokers))
        await asyncio.gather(*(b.ensure_consumer("default") for b in brokers))
        await brokers[0].ensure_layout()
    finally:
        for b in brokers:
            await b.close()


async def test_progress_pending_when_a_job_ends_is_dropped():
    """A throttled progress write still pending at the job's end must not overwrite its final status."""
    from naq_nb.core.context import JobContext
    written = []

    async def flush(ctx):
        written.append(ctx.progress_done)
    loop = asyncio.get_running_loop()
    ctx = JobContext("j", "default", 1, loop, flush, min_interval=0.0)
    ctx.update(1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert written == [1]           # a live job's progress is written
    ctx.update(2)                   # ... then the job ends before this write runs
    ctx.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert written == [1]


async def test_a_status_ttl_under_two_minutes_makes_a_layout_that_runs_jobs(settings, start_worker):
    # The waiting stream's de-duplication window (2 minutes) would exceed a shorter max age, which
    # the server refuses: the window follows the TTL down instead of every call failing.
    short = settings.with_(status_ttl=60.0, result_ttl=60.0)
    b = await Broker.connect(settings=short)
    try:
        await b.ensure_layout()
        info = await b.js.stream_info(b.layout.waiting_stream)
        assert info.config.max_age == 60.0 and info.config.duplicate_window == 60.0
        await start_worker(settings=short)
        j = await Queue(b).enqueue(jobs.add, 2, 2)
        assert (await wait_for_result(b, j.job_id, 30)).unwrap() == 4
    finally:
        await b.close()


async def test_replicas_a_single_server_cannot_keep_are_refused_naming_the_setting(settings):
    from naq_nb.core.errors import ConfigurationError
    b = await Broker.connect(settings=settings.with_(replicas=3, prefix=settings.prefix + "r3"))
    try:
        with pytest.raises(ConfigurationError, match="NAQ_REPLICAS sets how many; a single server takes 1"):
            await b.ensure_layout()
    finally:
        await b.close()
