"""The ``nq.*`` session calls (connect, submit, map, options, job) and the overview frames."""

from __future__ import annotations

import socket
import time

import pytest

import naq_nb as nq
from naq_nb.client import session
from naq_nb.core.errors import (ConfigurationError, JobNotFoundError, JobTimeoutError, NaqConnectionError,
                                UnknownQueueError)
from naq_nb.notebook import frames

import jobs
from helpers import wait_until


def _nothing_sent(client) -> None:
    assert client.queue_size_sync() == 0
    assert frames.jobs(client=client).empty


# --- submit ----------------------------------------------------------------------------
def test_function_keywords_all_reach_the_function(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.takes_reserved, 1, timeout=5, queue="q", max_retries=2)
    assert fut.result(timeout=20) == {"x": 1, "timeout": 5, "queue": "q", "max_retries": 2}
    assert fut.record["queue"] == "default"  # `queue=` went to the function, not to the job


def test_non_callable_is_refused_and_nothing_sent(nb_client):
    with pytest.raises(TypeError, match="callable"):
        nq.submit(42)
    with pytest.raises(TypeError, match="callable"):
        nq.map(None, [1, 2])
    with pytest.raises(ConfigurationError, match="import path"):
        nq.submit("notapath")
    _nothing_sent(nb_client)


def test_unknown_and_bad_options_raise_at_the_call(nb_client):
    with pytest.raises(TypeError, match="tiemout.*did you mean 'timeout'"):
        nq.options(tiemout=3)
    with pytest.raises(UnknownQueueError, match="bad queue"):
        nq.options(queue="bad queue!")
    with pytest.raises(ConfigurationError, match="timeout"):
        nq.options(timeout=-1)
    with pytest.raises(ConfigurationError, match="depends_on"):
        nq.options(depends_on=[object()])
    with pytest.raises(ConfigurationError, match="map"):
        nq.options(job_id="fixed").map(jobs.add, [1, 2], [3, 4])
    with pytest.raises(TypeError, match="at least one iterable"):
        nq.map(jobs.add)
    with pytest.raises(TypeError, match="iterables"):
        nq.map(jobs.add, 5)
    _nothing_sent(nb_client)


def test_unpicklable_argument_sends_nothing(nb_client):
    with pytest.raises(TypeError):
        nq.map(jobs.add, [1, socket.socket()], [1, 2])  # the second call cannot be pickled
    _nothing_sent(nb_client)


def test_map_keeps_order_with_zip_semantics(nb_client, thread_worker):
    thread_worker(concurrency=8)
    futs = nq.map(jobs.add, range(40), range(100, 140))
    assert [f.result(timeout=30) for f in futs] == [i + 100 + i for i in range(40)]
    short = nq.map(jobs.add, [1, 2, 3], [10, 20])
    assert [f.result(timeout=20) for f in short] == [11, 22]
    assert nq.map(jobs.add, [], []) == []  # a JobGroup is a list


def test_options_retry_dependencies_timeout_name(nb_client, thread_worker, tmp_path):
    thread_worker(concurrency=4)
    retried = nq.options(max_retries=2, retry_delay=0).submit(jobs.fail_until, str(tmp_path / "n"), 2)
    assert retried.result(timeout=20) == 2
    first = nq.submit(jobs.add, 1, 2)
    second = nq.options(depends_on=first, name="after-first").submit(jobs.add, 3, 4)
    assert second.result(timeout=20) == 7
    assert second.record["depends_on"] == [first.job_id] and second.name == "after-first"
    slow = nq.options(timeout=0.3).submit(jobs.async_sleep_for, 30)
    with pytest.raises(JobTimeoutError):
        slow.result(timeout=20)
    chosen = nq.options(job_id="my-job-1").submit(jobs.add, 2, 2)
    assert chosen.job_id == "my-job-1" and chosen.result(timeout=20) == 4
    chained = nq.options(queue="other").options(timeout=5)
    assert chained.job_options.queue == "other" and chained.job_options.timeout == 5


# --- job() -------------------------------------------------------------------------------
def test_job_reattach_and_unknown_id(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.add, 2, 2)
    fut.result(timeout=20)
    again = nq.job(fut.job_id)
    assert again.result(timeout=5) == 4 and again is not fut
    with pytest.raises(JobNotFoundError, match="unknown-id"):
        nq.job("unknown-id")
    with pytest.raises(TypeError, match="job id"):
        nq.job(123)


async def test_async_forms(nb_client, thread_worker):
    thread_worker()
    fut = await session.submit_async(jobs.add, 1, 1)
    futs = await session.map_async(jobs.add, [1, 2], [1, 2])
    assert [await f for f in [fut, *futs]] == [2, 2, 4]
    again = await session.job_async(fut.job_id)
    assert await again == 2
    sub = session.options(queue="default")
    assert await (await sub.submit_async(jobs.add, 3, 3)) == 6
    with pytest.raises(JobNotFoundError):
        await session.job_async("nope")
    frame = await frames.jobs_async(client=nb_client)
    assert len(frame) == 4


# --- connect ------------------------------------------------------------------------------
def test_connect_sets_default_and_passes_nats_options(nats_server):
    try:
        c = nq.connect(nats_server.url, name="my-notebook")
        assert nq.default_client() is c
        assert nq.connect(nats_server.url, name="my-notebook") is c  # re-running the cell: same client
        from naq_nb.client.loop import run_sync
        assert run_sync(c.broker()).nc.options["name"] == "my-notebook"
    finally:
        session.set_default_client(None)
        c.close_sync()


def test_connect_to_nothing_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("NAQ_CONNECT_TIMEOUT", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nothing answers there
        url = f"nats://127.0.0.1:{port}"
        t0 = time.monotonic()
        with pytest.raises(NaqConnectionError, match=f"127.0.0.1:{port}"):
            nq.connect(url)
    assert time.monotonic() - t0 < 30  # bounded, not hanging (a generous bound, not a speed figure)
    with pytest.raises(TypeError):
        session.set_default_client("nats://x")


# --- frames -------------------------------------------------------------------------------
def test_frames_empty_keep_columns(nb_client):
    for df, cols in ((frames.jobs(), frames.JOB_COLUMNS), (frames.workers(), frames.WORKER_COLUMNS),
                     (frames.failed(), frames.FAILED_COLUMNS), (frames.schedules(), frames.SCHEDULE_COLUMNS)):
        assert df.empty and list(df.columns) == cols
    with pytest.raises(ValueError, match="unknown job status 'finished'"):
        frames.jobs(status="finished")
    with pytest.raises(ValueError, match="limit"):
        frames.jobs(limit=-1)


def test_frames_contents(nb_client, thread_worker):
    w = thread_worker(concurrency=3)
    ok = nq.map(jobs.add, [1, 2, 3], [1, 1, 1])
    bad = nq.submit(jobs.boom, "frame")
    parked = nq.options(queue="parked").submit(jobs.add, 0, 0)
    for f in ok:
        f.result(timeout=20)
    bad.exception(timeout=20)
    wait_until(lambda: len(frames.failed()) == 1)

    df = frames.jobs()
    assert len(df) == 5 and set(df.job_id) == {f.job_id for f in [*ok, bad, parked]}
    assert df.set_index("job_id").loc[bad.job_id, "status"] == "failed"
    assert "frame" in df.set_index("job_id").loc[bad.job_id, "error"]
    assert (df.set_index("job_id").loc[[f.job_id for f in ok], "duration"] >= 0).all()
    assert str(df.enqueued_at.dtype).startswith("datetime64") and df.enqueued_at.is_monotonic_decreasing
    assert list(frames.jobs(status="failed").job_id) == [bad.job_id]
    assert list(frames.jobs(queue="parked").job_id) == [parked.job_id]
    assert len(frames.jobs(status=["succeeded", "queued"])) == 4
    assert len(frames.jobs(limit=2)) == 2

    wdf = frames.workers()
    assert list(wdf.worker_id) == [w.worker_id] and wdf.concurrency.iloc[0] == 3
    assert list(wdf.queues.iloc[0]) == ["default"] and wdf.heartbeat_age.iloc[0] >= 0
    # counts travel with the next heartbeat (every second here)
    wait_until(lambda: frames.workers().processed.iloc[0] >= 3)

    fdf = frames.failed()
    assert fdf.job_id.iloc[0] == bad.job_id and "ValueError" in fdf.traceback.iloc[0]
    assert fdf.function.iloc[0] == "jobs.boom"

    sched = pytest.importorskip("naq_nb.client.scheduling")
    sched.schedule_sync(jobs.add, 1, 2, interval=3600, client=nb_client)
    sdf = frames.schedules()
    assert len(sdf) == 1 and sdf.function.iloc[0] == "jobs.add" and sdf.interval.iloc[0] == 3600


def test_options_delay_and_at_run_later_through_the_scheduler():
    """Row 12: nq.options(delay=...) / (at=...) give a future that is `scheduled`, then runs."""
    import datetime
    c = nq.local(workers=1, store_dir=None)
    try:
        fut = nq.options(delay=1.0).submit(jobs.add, 1, 2)
        assert fut.status == "scheduled" and not fut.done()
        assert fut.result(timeout=30) == 3
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=0.5)
        g = nq.options(at=at, name="later").map(jobs.add, [1, 2], [10, 20])
        assert g.results(timeout=30) == [11, 22] and g.name == "later"
        for bad, match in (({"delay": -1}, "delay must be seconds"), ({"delay": "soon"}, "delay must be"),
                           ({"at": "noon"}, "at must be a datetime"), ({"delay": 1, "at": 5}, "not both")):
            with pytest.raises((TypeError, nq.ConfigurationError), match=match):
                nq.options(**bad)
    finally:
        c.stop()
