"""naq's documented API, item by item (issue 12), through the names as naq's docs spell them."""

import asyncio
import json
import pickle
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import naq_nb
from naq_nb import (
    JOB_STATUS, SCHEDULED_JOB_STATUS, WORKER_STATUS, ConfigurationError, Job, JobTimeoutError, Queue, RetryDelayType,
    Scheduler, Worker, close_sync_connections, enqueue, enqueue_sync, fetch_job_result_sync, get_job_status_sync,
    list_workers_sync,
)
from naq_nb.core.settings import Settings

import jobs


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def naq_env(nats_server, monkeypatch):
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    yield nats_server.url
    naq_nb.set_default_client(None)
    close_sync_connections()


class InThread:
    """Runs a Worker or Scheduler in its own thread and loop, as a separate process would."""

    def __init__(self, svc):
        self.svc = svc
        self.thread = threading.Thread(target=lambda: asyncio.run(svc.run()), daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.svc.started is not None and self.svc.started.is_set(), what="service start")
        return self.svc

    def __exit__(self, *exc):
        self.svc.request_stop()
        self.thread.join(15)


@pytest.fixture
def worker(naq_env):
    with InThread(Worker("default", worker_name="naq-style", heartbeat_interval=1, worker_ttl=10,
                         concurrency=4)) as w:
        yield w


@pytest.fixture
def scheduler(naq_env):
    with InThread(Scheduler(poll_interval=0.5, enable_ha=False)) as s:
        yield s


# --- 2. await Queue.close() ----------------------------------------------------------------
def test_queue_close_and_async_with(worker):
    async def produce():
        q = Queue(nats_url=naq_env_url())
        jobs_ = [await q.enqueue(jobs.add, i, 1) for i in range(3)]
        await q.close()
        assert q.client._broker is None, "close() dropped the connection"
        again = await q.enqueue(jobs.add, 10, 1)          # a later call reconnects
        async with Queue("default") as q2:
            last = await q2.enqueue(jobs.add, 20, 1)
        return jobs_ + [again, last]
    done = asyncio.run(produce())
    assert [fetch_job_result_sync(j, timeout=30) for j in done] == [1, 2, 3, 11, 21]


def naq_env_url():
    return Settings.from_env().nats_url


# --- 3. Queue instance scheduling methods ----------------------------------------------------
def test_queue_instance_scheduling_methods(worker, scheduler):
    q = Queue("default")

    async def calls():
        at = await q.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=0.3), jobs.add, 1, 2)
        later = await q.enqueue_in(timedelta(seconds=0.3), jobs.add, 2, 2)
        rec = await q.schedule(jobs.add, 3, 3, interval=3600, repeat=2)
        assert await q.pause_scheduled_job(rec.job_id) is True
        return at, later, rec
    at, later, rec = asyncio.run(calls())
    assert fetch_job_result_sync(at, timeout=30) == 3
    assert fetch_job_result_sync(later, timeout=30) == 4
    row = [r for r in naq_nb.list_scheduled_sync() if r["schedule_id"] == rec.job_id][0]
    assert row["status"] == SCHEDULED_JOB_STATUS.PAUSED

    async def control():
        assert await q.resume_scheduled_job(rec.job_id) is True
        soon = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        assert await q.modify_scheduled_job(rec.job_id, scheduled_timestamp_utc=soon.timestamp()) is True
    asyncio.run(control())
    wait_for(lambda: [r for r in naq_nb.list_scheduled_sync() if r["schedule_id"] == rec.job_id][0]["runs"] == 1,
             what="the modified schedule to fire")
    assert q.cancel_scheduled_job_sync(rec.job_id) is True
    assert rec.job_id not in [r["schedule_id"] for r in naq_nb.list_scheduled_sync()]


# --- 4. Queue(default_timeout), Worker(...), Scheduler(...) keywords -----------------------------
def test_queue_default_timeout(worker):
    q = Queue("default", default_timeout=0.5)
    slow = q.enqueue_sync(jobs.async_sleep_for, 20)
    assert slow.timeout == 0.5
    with pytest.raises(JobTimeoutError):
        fetch_job_result_sync(slow, timeout=30)
    assert q.enqueue_sync(jobs.async_sleep_for, 0.1, timeout=10).timeout == 10   # a job's own wins
    with pytest.raises(ValueError, match="timeout"):
        Queue("default", default_timeout=-1)


def test_worker_keywords_have_naqs_meaning(worker):
    rows = wait_for(lambda: [r for r in list_workers_sync() if r["name"] == "naq-style"], what="heartbeat")
    assert worker.settings.heartbeat_interval == 1 and worker.settings.worker_ttl == 10
    first = rows[0]["heartbeat_at"]
    # (a slow moment may show no live row for a beat: that read says "not yet", not an IndexError)
    wait_for(lambda: any(r["heartbeat_at"] > first for r in list_workers_sync() if r["name"] == "naq-style"),
             what="a second heartbeat, heartbeat_interval=1 s later")
    assert rows[0]["state"] in (WORKER_STATUS.IDLE, WORKER_STATUS.BUSY)


def test_worker_and_scheduler_bad_keywords_fail_at_the_call(tmp_path):
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        Worker("default", heartbeat_interval=0)
    with pytest.raises(ConfigurationError, match="below worker_ttl"):
        Worker("default", heartbeat_interval=30, worker_ttl=10)
    with pytest.raises(ConfigurationError, match="per-queue ack_wait"):
        Worker(["a", "b"], ack_wait={"a": 10})
    with pytest.raises(ConfigurationError, match="poll_interval"):
        Scheduler(poll_interval=0)
    with pytest.raises(ConfigurationError, match="enable_ha"):
        Scheduler(enable_ha=False, ha=True)
    import sys
    Worker("default", module_paths=str(tmp_path))
    assert sys.path[0] == str(tmp_path)
    sys.path.remove(str(tmp_path))


def test_worker_run_sync_and_list_workers(naq_env):
    w = Worker("other", worker_name="blocking")
    t = threading.Thread(target=w.run_sync, daemon=True)
    t.start()
    wait_for(lambda: w.started is not None and w.started.is_set(), what="run_sync start")
    names = wait_for(lambda: [r["name"] for r in Worker.list_workers_sync()], what="heartbeat")
    assert names == ["blocking"] and asyncio.run(Worker.list_workers())[0]["name"] == "blocking"
    w.request_stop()
    t.join(15)
    assert not t.is_alive()


def test_scheduler_keywords(scheduler):
    assert scheduler.enable_ha is False and scheduler.is_leader and scheduler.poll_interval == 0.5


# --- 5. retry_strategy / retry_on / ignore_on are job options ------------------------------------
def test_retry_options_are_options_not_arguments(worker, tmp_path):
    # takes_reserved has no **kwargs: it would raise TypeError if these reached it.
    j = enqueue_sync(jobs.takes_reserved, 1, max_retries=2, retry_delay=1, retry_strategy="exponential",
                     retry_on=(ConnectionError, "TimeoutError"), ignore_on=(ValueError,))
    assert fetch_job_result_sync(j, timeout=30)["x"] == 1
    assert j.retry_strategy == "exponential" and j.options.retry.delay_for(3) == 4.0
    assert j.retry_on == ("ConnectionError", "TimeoutError") and j.ignore_on == ("ValueError",)
    flaky = enqueue_sync(jobs.fail_until, str(tmp_path / "n"), 3, max_retries=3, retry_delay=0.1,
                         retry_strategy="linear", retry_on=(ConnectionError,))
    assert fetch_job_result_sync(flaky, timeout=30) == 3
    assert flaky.retry_strategy == "linear" and flaky.options.retry.delay_for(3) == 0.1


def test_ignore_on_stops_retries(worker):
    j = enqueue_sync(jobs.boom, "no retry", max_retries=3, retry_delay=0.1, ignore_on=(ValueError,))
    with pytest.raises(ValueError):
        fetch_job_result_sync(j, timeout=30)
    k = enqueue_sync(jobs.boom, "not listed", max_retries=3, retry_delay=0.1, retry_on=["KeyError"])
    with pytest.raises(ValueError):
        fetch_job_result_sync(k, timeout=30)
    for job in (j, k):   # the status record follows the result record
        rec = wait_for(lambda job=job: (r := get_job_status_sync(job))["status"] == "failed" and r,
                       what="failed status")
        assert rec["failures"] == 1


def test_bad_retry_strategy_fails_at_the_call(naq_env):
    q = Queue("nobody")
    with pytest.raises(ValueError, match="retry_strategy"):
        q.enqueue_sync(jobs.add, 1, 2, max_retries=1, retry_strategy="fibonacci")
    assert q.count_sync() == 0


# --- 6. Job.fetch_result / status / error / traceback / result_ttl / retry_strategy ---------------
def test_job_naq_attributes(worker):
    j = enqueue_sync(jobs.add, 2, 3, result_ttl=60)
    assert j.result_ttl == 60 and j.retry_strategy == "linear"
    assert fetch_job_result_sync(j, timeout=30) == 5
    assert asyncio.run(Job.fetch_result(j.job_id)) == 5          # naq: a static method taking the id
    assert Job.fetch_result_sync(j.job_id) == 5
    assert j.fetch_result_sync() == 5                            # and on the handle
    wait_for(lambda: j.status == JOB_STATUS.COMPLETED, what="status record")  # it follows the result
    assert j.error is None and j.traceback is None
    bad = enqueue_sync(jobs.boom, "kaput")
    with pytest.raises(naq_nb.JobExecutionError):
        Job.fetch_result_sync(bad.job_id, timeout=30)
    wait_for(lambda: bad.status == JOB_STATUS.FAILED, what="failed status")
    assert bad.error == "ValueError: kaput" and "boom" in bad.traceback


# --- 7. top-level names and naq module paths --------------------------------------------------
def test_top_level_names(naq_env, naq_prefix, monkeypatch):
    assert naq_nb.DEFAULT_NATS_URL == naq_env
    from naq_nb import DEFAULT_NATS_URL
    assert DEFAULT_NATS_URL == naq_env
    assert JOB_STATUS.COMPLETED == "succeeded" and JOB_STATUS.PENDING == naq_nb.JobStatus.QUEUED
    assert SCHEDULED_JOB_STATUS.ACTIVE.value == "active" and WORKER_STATUS.BUSY.value == "busy"
    assert RetryDelayType is not None

    async def use():
        client = await naq_nb.connect(naq_env)
        assert isinstance(client, naq_nb.Client)
        job = await enqueue(jobs.add, 1, 1, queue_name="nobody")
        await naq_nb.get_client(naq_env).wait_stored(job.job_id)  # a plain enqueue returns before its ack
        nc = await naq_nb.get_nats_connection(naq_env)
        assert nc.is_connected and await naq_nb.get_nats_connection(naq_env) is nc
        js = await naq_nb.get_jetstream_context(nc)
        info = await js.stream_info(f"{naq_prefix.upper()}_JOBS")  # NAQ_PREFIX is the test's
        await naq_nb.close_nats_connection()
        assert nc.is_closed
        await naq_nb.disconnect()
        assert client._broker is None
        return job, info
    job, info = asyncio.run(use())
    assert info.state.messages == 1 and job.queue_name == "nobody"
    naq_nb.disconnect()   # also works without await


def test_naq_module_paths(naq_env):
    from naq_nb.queue import Queue as Q, close_sync_connections as csc, enqueue_sync as es
    from naq_nb.settings import DEFAULT_NATS_URL, DEFAULT_QUEUE_NAME, JOB_STATUS as JS
    from naq_nb.worker import Worker as W
    from naq_nb.scheduler import Scheduler as S
    from naq_nb.connection import close_nats_connection, get_jetstream_context, get_nats_connection  # noqa: F401
    from naq_nb.exceptions import JobExecutionError, JobNotFoundError  # noqa: F401
    assert (Q, es, csc, W, S, JS) == (Queue, enqueue_sync, close_sync_connections, Worker, Scheduler, JOB_STATUS)
    assert DEFAULT_NATS_URL == naq_env and DEFAULT_QUEUE_NAME == "default"
    from naq_nb.core.settings import Settings as CoreSettings   # the shim does not shadow the engine's
    assert naq_nb.Settings is CoreSettings and callable(naq_nb.job)


# --- 8. naq's environment variables: tests/unit/test_options_and_settings.py --------------------
# --- 10. queue names ----------------------------------------------------------------------------
def test_queue_names(naq_env):
    with pytest.raises(ValueError, match="cannot be empty"):
        Queue("")
    with pytest.raises(ValueError, match="cannot be empty"):
        enqueue_sync(jobs.add, 1, 2, queue_name="")
    with pytest.raises(ValueError, match="one token of the NATS subject"):
        Queue("emails.high")
    assert Queue().name == "default" and Queue(None).name == "default"


def test_raw_connection_to_nowhere_is_one_clear_error(monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NAQ_CONNECT_TIMEOUT", "2")
    with pytest.raises(naq_nb.NaqConnectionError, match=f"127.0.0.1:{port}"):
        asyncio.run(naq_nb.get_nats_connection(f"nats://127.0.0.1:{port}"))


def test_queue_close_leaves_the_session_client_open(naq_env):
    session = naq_nb.connect(naq_env)
    q = Queue("default")
    assert q.client is session
    q.enqueue_sync(jobs.add, 1, 1)
    asyncio.run(q.close())
    assert session._broker is not None and session._broker.is_connected


# --- 11. naq's docs and examples as an audit ran them (round 3) --------------------------------
def test_a_job_handle_is_an_argument_and_a_dependency(worker):
    # naq's dependency example: enqueue(process_data, file_path=download_job, depends_on=[download_job])
    first = enqueue_sync(jobs.add, 1, 2)
    second = enqueue_sync(jobs.job_id_of, job=first, depends_on=[first])
    assert fetch_job_result_sync(second, timeout=30) == first.job_id
    copy = pickle.loads(pickle.dumps(first))
    assert copy.job_id == first.job_id and not hasattr(copy, "_client")
    assert first.fetch_result_sync() == 3  # the handle itself still reads through its client


def test_fetch_result_on_a_handle_takes_an_id_as_naqs_examples_do(worker):
    # naq's hello_world example: result = job.fetch_result_sync(job.job_id)
    j, other = enqueue_sync(jobs.add, 2, 2), enqueue_sync(jobs.add, 3, 3)
    assert j.fetch_result_sync(j.job_id, timeout=30) == 4
    assert j.fetch_result_sync(other.job_id, timeout=30) == 6
    assert asyncio.run(j.fetch_result(j.job_id)) == 4


def test_naqs_keyword_names_for_delays_and_schedule_control(worker, scheduler):
    later = naq_nb.enqueue_in_sync(delta=timedelta(seconds=0.2), func=jobs.add, a=1, b=2)
    assert fetch_job_result_sync(later, timeout=30) == 3
    sj = naq_nb.schedule_sync(jobs.add, 1, 1, interval=3600, repeat=2)
    assert naq_nb.pause_scheduled_job_sync(job_id=sj.job_id)["paused"] is True
    assert naq_nb.resume_scheduled_job_sync(job_id=sj.job_id)["paused"] is False
    assert naq_nb.modify_scheduled_job_sync(job_id=sj.job_id, repeat=3)["repeat"] == 3
    assert naq_nb.cancel_scheduled_job_sync(job_id=sj.job_id) is True


def test_a_recurring_schedules_id_reads_its_latest_run(worker, scheduler):
    idle = naq_nb.schedule_sync(jobs.add, 0, 0, interval=3600)
    with pytest.raises(naq_nb.JobNotFinishedError, match="has not fired yet"):
        Job.fetch_result_sync(idle.job_id)
    sj = naq_nb.schedule_sync(jobs.add, 2, 5, interval=0.3, repeat=2)
    assert Job.fetch_result_sync(sj.job_id, timeout=30) == 7  # waits for its first run
    wait_for(lambda: sj.status == JOB_STATUS.COMPLETED, what="the schedule to finish")
    # "completed" once its last run is fired, not run: the read waits for that run, then reads it at once
    assert Job.fetch_result_sync(sj.job_id, timeout=30) == 7
    assert Job.fetch_result_sync(sj.job_id) == 7 and sj.fetch_result_sync() == 7
    naq_nb.cancel_scheduled_job_sync(idle.job_id)


def test_a_forged_schedule_record_never_lends_another_jobs_result(worker, naq_prefix):
    other = enqueue_sync(jobs.add, 20, 22)
    assert fetch_job_result_sync(other, timeout=30) == 42
    forged = {"id": "fake-sched", "queue": "default", "status": "succeeded", "schedule": "interval",
              "last_job_id": other.job_id, "updated_at": time.time()}

    async def forge():
        from naq_nb.core.layout import Layout
        nc = await naq_nb.get_nats_connection()
        kv = await nc.jetstream().key_value(Layout(naq_prefix).status_bucket)
        await kv.put("fake-sched", json.dumps(forged).encode())
        await naq_nb.close_nats_connection()
    asyncio.run(forge())
    with pytest.raises(naq_nb.JobNotFoundError, match="without a run"):
        Job.fetch_result_sync("fake-sched", timeout=5)


def test_naqs_except_clauses_catch_what_a_failed_job_raises(worker):
    missing = enqueue_sync(jobs.open_missing, "/nonexistent/naq-input.csv")
    with pytest.raises(naq_nb.JobExecutionError) as info:
        fetch_job_result_sync(missing, timeout=30)
    assert isinstance(info.value, FileNotFoundError) and info.value.filename == "/nonexistent/naq-input.csv"
    assert "/nonexistent/naq-input.csv" in str(info.value)      # naq's `print(f"failed: {e}")` shows it
    dependent = enqueue_sync(jobs.add, 1, 1, depends_on=[missing])
    with pytest.raises(naq_nb.JobExecutionError, match="depends on job"):  # a DependencyFailedError
        fetch_job_result_sync(dependent, timeout=30)


def test_naqs_worker_and_option_types(naq_env):
    # Valid in naq, whose TTL defaults to 60 s; here (30 s) it is refused at the call, naming the fix: a
    # record that expired between heartbeats would make other workers count this one's jobs as lost.
    with pytest.raises(ValueError, match="heartbeat_interval.*must be below worker_ttl"):
        Worker("default", heartbeat_interval=40)
    w = Worker("default", heartbeat_interval=40, worker_ttl=160)
    assert w.settings.heartbeat_interval == 40 and w.settings.worker_ttl == 160
    q = Queue("nobody")
    with pytest.raises(TypeError, match="retry_delay must be a number"):  # naq raises TypeError here
        q.enqueue_sync(jobs.add, 1, 2, max_retries=1, retry_delay="soon")
    assert q.count_sync() == 0


def test_a_wait_on_a_schedule_whose_record_goes_ends(worker, scheduler, naq_prefix):
    idle = naq_nb.schedule_sync(jobs.add, 0, 0, interval=3600)

    async def wait_then_delete():
        from naq_nb.core.layout import Layout
        nc = await naq_nb.get_nats_connection()
        kv = await nc.jetstream().key_value(Layout(naq_prefix).status_bucket)
        waiting = asyncio.ensure_future(Job.fetch_result(idle.job_id, timeout=None))
        await asyncio.sleep(0.5)  # (most likely subscribed by then; either way the wait must end)
        await kv.delete(idle.job_id)
        try:
            return await asyncio.wait_for(waiting, 30)
        finally:
            await naq_nb.close_nats_connection()
    with pytest.raises(naq_nb.JobNotFoundError, match="no (schedule|job) with id"):  # not a wait for ever
        asyncio.run(wait_then_delete())
    naq_nb.cancel_scheduled_job_sync(idle.job_id)


def test_a_raw_connection_goes_with_the_loop_that_made_it(naq_env):
    """naq's habit: get_nats_connection() in asyncio.run(...) and no close. The loop's end closes it,
    so a script doing that in a loop does not keep one open socket per run."""
    made = []

    async def use():
        nc = await naq_nb.get_nats_connection(naq_env)
        await nc.publish("naq-test.raw", b"x")
        made.append(nc)

    for _ in range(3):
        asyncio.run(use())
    assert all(nc.is_closed for nc in made), [nc.is_closed for nc in made]
