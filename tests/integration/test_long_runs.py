"""What a long-running service or client keeps per job: nothing that grows without bound.

Each test runs many jobs (or schedules) and counts what is left behind in the state naq_nb keeps,
not time or memory."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref

import pytest

import naq_nb as nq
from naq_nb.client.client import Client
from naq_nb.core.errors import JobTimeoutError
from naq_nb.core.scheduler import Scheduler
from naq_nb.core.queue import Queue
from naq_nb.core.schedules import list_schedules, make_schedule, save_schedule

import jobs
from helpers import Services, eventually, wait_until


@pytest.fixture
async def start_scheduler(settings):
    services = Services()

    async def _start(**kw) -> Scheduler:
        return await services.start(Scheduler(settings=settings, **kw))

    yield _start
    await services.stop_all(graceful=True)


async def _true(value: bool) -> bool:
    return value


async def test_a_scheduler_forgets_the_schedules_that_ended(broker, settings, start_scheduler):
    """Every schedule a scheduler had seen kept an entry in its revision map, deleted or not: one
    per ``enqueue_in`` / ``enqueue_at`` job for as long as the scheduler ran."""
    sch = await start_scheduler()
    url = settings.nats_url
    for i in range(40):
        await nq.enqueue_in(0.0, jobs.add, i, 1, nats_url=url)
    cancelled = [await nq.schedule(jobs.add, i, 1, interval=3600, nats_url=url) for i in range(20)]
    for job in cancelled:
        assert await nq.cancel_scheduled_job(job, nats_url=url)
    kept = await nq.schedule(jobs.add, 1, 1, interval=3600, nats_url=url)
    await eventually(lambda: _true(sch.fired == 40), 30, "the delayed jobs to fire")
    assert [s.id for s in await list_schedules(broker)] == [kept.job_id]
    await eventually(lambda: _true(list(sch.schedules) == [kept.job_id]), 15, "the scheduler to see the cancels")
    # Once the watch has brought the deletes (the scheduler applied its own one-shots' at once), only
    # the live schedule is remembered.
    await eventually(lambda: _true(len(sch._seen_rev) == 1), 10, "the ended schedules to be forgotten")


def test_a_closed_client_that_followed_futures_is_freed(nb_client, thread_worker, settings):
    """The futures' watch was kept in a map keyed weakly by its client, but it holds its client: the
    entry never went, and every client that ever had a future stayed in memory for good, with its
    closed connection and watch (each ``nq.local()`` stop and start left one behind)."""
    thread_worker()
    mine = [nq.submit(jobs.add, i, 1) for i in range(3)]
    assert [f.result(timeout=30) for f in mine] == [1, 2, 3]
    gone = []
    for _ in range(3):
        other = Client(settings=settings)
        futs = [nq.job(f.job_id, client=other) for f in mine]  # reads only: no publish in flight
        assert [f.result(timeout=30) for f in futs] == [1, 2, 3]
        other.close_sync()
        gone.append(weakref.ref(other))
        del other, futs
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]


def test_a_thread_job_that_prints_after_it_ended_leaves_no_output_state(nb_client, thread_worker, tmp_path):
    """In threads mode a job past its timeout runs on; what it printed after it ended kept an entry
    (its JobContext and a line buffer) in the worker's captured stdout for good, one per such job."""
    from naq_nb.core.context import _CaptureStream
    thread_worker(execution="threads")
    marks = [tmp_path / f"printed{i}" for i in range(5)]
    futs = [nq.options(timeout=0.05).submit(jobs.print_late, 0.3, str(m)) for m in marks]
    for f in futs:
        with pytest.raises(JobTimeoutError):
            f.result(timeout=30)
    wait_until(lambda: all(m.exists() for m in marks), timeout=30)  # each thread has printed
    assert isinstance(sys.stdout, _CaptureStream) and sys.stdout._partial == {}


async def test_a_failing_schedule_that_is_deleted_leaves_no_wait_behind(broker, settings):
    """A schedule whose fires were failing kept its back-off wait after it was cancelled, until the
    next reconnect: one entry per such schedule."""
    from naq_nb.core.scheduler import FireError
    T0 = time.time()
    job = Queue(broker, "fq").make_job(jobs.add, (1, 2))
    s, body = make_schedule(job, broker, interval=1.0, now=T0)
    await save_schedule(broker, s, body)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    watching = asyncio.ensure_future(sch._watch_loop())
    try:
        await broker.js.delete_stream(broker.layout.jobs_stream)  # its job goes nowhere: the fire fails
        with pytest.raises(FireError):
            await sch.tick(s.next_run)
        assert list(sch.backoff._waits) == [s.id]
        kv = await broker.kv(broker.layout.schedules_bucket)
        await kv.delete(broker.layout.schedule_key(s.id))
        await eventually(lambda: _true(s.id not in sch.schedules), 10, "the scheduler to see the delete")
        assert sch.backoff._waits == {}
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
