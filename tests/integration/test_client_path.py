"""The per-call client path (issue 10): enqueues confirmed in the background, reads on the caller's
loop, enqueue_many's window; and that none of it lets a failure to store pass silently."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import signal
import threading
import warnings
import time
import traceback

import pytest

import jobs
from helpers import all_threads_stopped, wait_until
from naq_nb.core.broker import server_has_fast_batches
from naq_nb import Queue, fetch_job_result, fetch_job_result_sync
from naq_nb.client import stores
from naq_nb.client.client import Client
from naq_nb.core import jobsend, queue as core_queue
from naq_nb.client.future import JobFuture
from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError, JobNotStoredError, NaqConnectionError


@pytest.fixture
def client(quick_client):
    return quick_client


def _in_thread(fn):
    """Run ``fn()`` in a new thread (``asyncio.run`` needs a thread without a running loop)."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc
    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish within 60 s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# --- reads on the caller's loop ---------------------------------------------------------------
def test_reads_use_a_connection_of_the_callers_loop_closed_when_asyncio_run_ends(client):
    q = Queue("nobody", client=client)  # no worker: the job stays queued
    seen: dict = {}

    async def main() -> None:
        job = await q.enqueue(jobs.add, 1, 2)
        for _ in range(3):
            assert (await client.status(job.job_id))["status"] == "queued"
        loop = asyncio.get_running_loop()
        task = client._here.get(loop)
        assert task is not None and task.done(), "the loop's second read made a connection for it"
        seen["broker"] = task.result()
        assert seen["broker"] is not client._broker and seen["broker"].nc.is_connected

    _in_thread(lambda: asyncio.run(main()))
    assert seen["broker"].nc.is_closed, "asyncio.run's shutdown closed the loop's connection"
    assert not client._here, "and forgot it"


def test_a_loop_making_one_call_gets_no_connection(client):
    q = Queue("nobody", client=client)
    job = q.enqueue_sync(jobs.add, 1, 2)

    async def one() -> str:
        return (await client.status(job.job_id))["status"]

    for _ in range(3):
        assert _in_thread(lambda: asyncio.run(one())) == "queued"
    assert not client._here


def test_close_closes_the_connections_of_live_caller_loops(client):
    q = Queue("nobody", client=client)
    job = q.enqueue_sync(jobs.add, 1, 2)
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever)
    t.start()
    try:
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(client.status(job.job_id), loop).result(30)
        b = client._here[loop].result()
        client.close_sync()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), loop).result(30)  # the close ran there
        for _ in range(300):
            if b.nc.is_closed:
                break
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), loop).result(30)
        assert b.nc.is_closed
        # a later call reconnects
        assert asyncio.run_coroutine_threadsafe(client.status(job.job_id), loop).result(30)["status"] == "queued"
    finally:
        asyncio.run_coroutine_threadsafe(_end_loop(client), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        t.join(30)
        loop.close()


async def _end_loop(client) -> None:
    """Close the client, wait for this loop's connection to close, then shut the loop down cleanly."""
    here = client._here.get(asyncio.get_running_loop())
    await client.close()
    if here is not None and here.done() and here.exception() is None:
        for _ in range(3000):
            if here.result().nc.is_closed:
                break
            await asyncio.sleep(0.01)
    await asyncio.get_running_loop().shutdown_asyncgens()


async def test_a_read_right_after_enqueue_sees_the_job(client):
    q = Queue("nobody", client=client)
    for _ in range(30):
        job = await q.enqueue(jobs.add, 1, 2)
        with pytest.raises(JobNotFinishedError):  # not JobNotFoundError: the read waits for the store
            await fetch_job_result(job, timeout=0)
    await client.flush()


async def test_results_read_back_on_the_callers_loop(client, start_worker):
    await start_worker("rb")
    q = Queue("rb", client=client)
    js = [await q.enqueue(jobs.add, i, 1) for i in range(20)]
    assert [await fetch_job_result(j, timeout=30) for j in js] == [i + 1 for i in range(20)]
    assert [await fetch_job_result(j, timeout=30) for j in js] == [i + 1 for i in range(20)]
    assert asyncio.get_running_loop() in client._here


# --- failures to store are never silent ----------------------------------------------------
@pytest.mark.parametrize("timeout", [0, 120], ids=["check_once", "wait_for_the_push"])
def test_an_unacknowledged_enqueue_fails_its_handle_then_the_next_call(client, frozen, timeout):
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    job = q.enqueue_sync(jobs.add, 1, 2)  # handed over: returns at once
    assert client._inbox.expects(job.job_id)
    with pytest.raises(JobNotStoredError, match=job.job_id):  # a read learns first it was never stored
        fetch_job_result_sync(job, timeout=timeout)
    with pytest.raises(JobNotStoredError, match=job.job_id):
        q.enqueue_sync(jobs.add, 3, 4)  # the next call reports it
    with pytest.raises(JobNotStoredError, match=job.job_id):
        client.status_sync(job.job_id)  # the handle keeps failing
    depths = []
    for _ in range(3):  # the same failure, read again and again: its traceback must not pile up
        with pytest.raises(JobNotStoredError) as info:
            client.status_sync(job.job_id)
        depths.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert depths[0] == depths[-1], depths


@pytest.mark.parametrize("timeout", [0, 1])
def test_a_result_read_from_a_frozen_server_ends_within_its_timeout(client, frozen, timeout):
    """SIGSTOPped server: the connection looks up, and each read waited JetStream's 10 s request bound,
    so `fetch_job_result(job, timeout=1)` took 10 s. The caller's timeout bounds it now (a second's margin)."""
    job = Queue("nobody", client=client).enqueue_sync(jobs.add, 1, 2)
    client.flush_sync()
    frozen()
    t0 = time.monotonic()
    with pytest.raises(NaqConnectionError, match=f"did not answer while reading the result of job {job.job_id}") as err:
        client.result_sync(job.job_id, timeout=timeout)
    took = time.monotonic() - t0
    # The bound is the timeout and a second; the rest is room for a loaded machine, well under the 10 s it took.
    assert isinstance(err.value, TimeoutError) and took < timeout + 5, f"took {took:.1f}s"


def test_flush_and_close_raise_what_was_not_stored(client, frozen):
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    job = q.enqueue_sync(jobs.add, 1, 2)
    with pytest.raises(JobNotStoredError, match=job.job_id):
        client.flush_sync()
    job2 = q.enqueue_sync(jobs.add, 1, 2)  # the failure above was reported once: this call goes on
    with pytest.raises(JobNotStoredError, match=job2.job_id):
        client.close_sync()


async def test_a_connection_to_a_frozen_server_is_closed_without_a_drain(settings, frozen, monkeypatch):
    """No answer to a ping within the publish bound: no drain, whose own closing flush would wait 10 s more."""
    from naq_nb.core.broker import Broker
    b = await Broker.connect(settings=settings.with_(publish_timeout=1.0))
    drains = []
    monkeypatch.setattr(b.nc, "drain", lambda: drains.append(1))  # recorded, never run
    frozen()
    await b.close()
    assert b.nc.is_closed and drains == []


def test_a_submitted_future_fails_when_its_job_is_not_stored(client, frozen):
    import naq_nb as nq
    sub = nq.options(client=client, queue="nobody")
    assert sub.submit(jobs.add, 0, 0).status == "queued"  # connected, layout ready
    client.flush_sync()
    frozen()
    fut = sub.submit(jobs.add, 1, 2)
    with pytest.raises(JobNotStoredError):
        nq.job(fut.job_id, client=client)  # a lookup by id waits for the store, then says why it failed
    with pytest.raises(JobNotStoredError):
        fut.result(timeout=30)
    assert fut.status == "failed"


def test_the_window_bounds_enqueues_in_flight(client, frozen, monkeypatch):
    monkeypatch.setattr(stores, "WINDOW", 5)
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    most = 0
    with pytest.raises(JobNotStoredError):  # the 6th call waits for the oldest, which times out
        for i in range(10):
            q.enqueue_sync(jobs.add, i, 0)
            most = max(most, client._stores.in_flight)
    assert 0 < most <= 5


def test_a_full_window_reports_the_oldest_failure_once(client, frozen, monkeypatch):
    """An async enqueue waiting for room raises the oldest job's failure once, not again later."""
    monkeypatch.setattr(stores, "WINDOW", 1)
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    first = q.enqueue_sync(jobs.add, 1, 1)  # handed over, never acknowledged

    async def second_then_third() -> list[str]:
        seen = []
        for i in (2, 3):
            try:
                await q.enqueue(jobs.add, i, i)
            except JobNotStoredError as exc:
                seen.append(str(exc))
        return seen

    seen = asyncio.run(second_then_third())
    assert sum(first.job_id in msg for msg in seen) == 1, seen


def test_enqueues_while_the_server_is_killed_are_stored_or_reported(client, own_nats_server, nats_server):
    """kill -9 mid-way: every enqueue that returned is either stored or reported (its handle
    raises JobNotStoredError); none is silently missing after the restart."""
    q = Queue("nobody", client=client)
    returned, raised = [], []
    for i in range(400):
        if i == 150:
            nats_server.kill()
        try:
            returned.append(q.enqueue_sync(jobs.add, i, 0))
        except JobNotStoredError as exc:
            raised.append(exc)
        except Exception as exc:  # the acknowledged path raises the connection error itself
            raised.append(exc)
        if len(raised) >= 3:
            break
    assert raised, "enqueues against a killed server must fail"
    try:
        client.flush_sync()
    except JobNotStoredError:
        pass  # reported: that is the point
    nats_server.restart()
    stored = reported = 0
    for job in returned:
        for _ in range(100):  # the client reconnects on its own
            try:
                client.status_sync(job.job_id)
                stored += 1
                break
            except JobNotStoredError:
                reported += 1
                break
            except JobNotFoundError:
                raise AssertionError(f"job {job.job_id} returned by enqueue is neither stored nor reported") from None
            except Exception:  # still reconnecting
                threading.Event().wait(0.1)
        else:
            raise AssertionError("no answer after the restart")
    # Jobs still in flight at the kill are reported (they may or may not be stored); the rest are stored.
    assert stored > 0 and stored + reported == len(returned)


# --- enqueue_many's window ----------------------------------------------------------------------
async def test_enqueue_many_keeps_a_bounded_window_in_flight(broker, monkeypatch):
    monkeypatch.setattr(broker, "fast_batches", False)  # job by job (a server before 2.14)
    monkeypatch.setattr(core_queue, "ENQUEUE_WINDOW", 50)
    most = 0
    real = broker.publish_async

    async def counting(*a, **kw):
        nonlocal most
        most = max(most, len(broker.acks))
        return await real(*a, **kw)
    monkeypatch.setattr(broker, "publish_async", counting)
    made = await core_queue.Queue(broker, "many").enqueue_many([(jobs.add, (i, 1), {}) for i in range(1000)])
    assert len(made) == 1000 and all(j.sequence for j in made)
    assert most <= 2 * 50, f"{most} publishes were in flight"
    assert await core_queue.Queue(broker, "many").count() == 1000


async def test_enqueue_many_in_fast_batches_runs_a_bounded_way_ahead_of_the_acks(broker, monkeypatch):
    from naq_nb.core import fastbatch

    if not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    assert broker.fast_batches, "a 2.14+ server: both streams allow batched publishes"
    monkeypatch.setattr(fastbatch, "FLOW", 20)
    monkeypatch.setattr(core_queue, "FAST_FLOW", 20)
    ahead = []
    real = fastbatch.FastBatch.add

    async def counting(self, *a, **kw):
        ahead.append(self.sent - self.acked)
        return await real(self, *a, **kw)

    monkeypatch.setattr(fastbatch.FastBatch, "add", counting)
    made = await core_queue.Queue(broker, "many").enqueue_many([(jobs.add, (i, 1), {}) for i in range(3000)])
    assert len(ahead) == 2 * 3000, "every job and its record went in the batches"
    # Paced every FLOW jobs: at most AHEAD windows unacknowledged, plus the FLOW sent since the last check.
    assert max(ahead) <= 20 * (fastbatch.AHEAD + 1), max(ahead)
    assert len(made) == 3000 and await core_queue.Queue(broker, "many").count() == 3000


def test_cancel_right_after_enqueue_removes_the_queued_message(client):
    q = Queue("cancelme", client=client)
    job = q.enqueue_sync(jobs.add, 1, 2)  # returns before its acknowledgement (no sequence yet)
    assert client.cancel_sync(job.job_id, job.sequence)
    assert q.count_sync() == 0, "the message left the stream, so no worker started later runs it"
    assert client.cancel_sync(job.job_id) is False  # already ended


def test_count_right_after_enqueues_counts_them(client):
    q = Queue("counted", client=client)
    for n in range(1, 21):
        q.enqueue_sync(jobs.add, n, 0)  # each returns before its acknowledgement
        assert q.count_sync() == n, "a count on the same client sees every enqueue it made"


def test_purge_right_after_enqueues_drops_them_all(client):
    q = Queue("purged", client=client)
    for n in range(20):
        q.enqueue_sync(jobs.add, n, 0)
    assert q.purge_sync() == 20
    assert q.count_sync() == 0, "no enqueue still in flight lands after the purge"


def test_a_loop_closed_without_shutdown_is_forgotten(client):
    from naq_nb.client import loop as loop_mod
    q = Queue("nobody", client=client)
    job = q.enqueue_sync(jobs.add, 1, 2)
    lp = asyncio.new_event_loop()
    try:
        for _ in range(2):
            lp.run_until_complete(client.status(job.job_id))
        assert lp in client._here and lp in loop_mod._loops
    finally:
        lp.close()  # no shutdown_asyncgens (close() runs its hooks first now)
    # the next caller loop's connection sweeps the dead one away
    _in_thread(lambda: asyncio.run(_reads(client, job.job_id, 2)))
    assert lp not in client._here and lp not in loop_mod._loops
    # Its abandoned tasks are finalized now, while nothing compiles: a collection that runs them in
    # the middle of an import (CPython 3.11's AST depth check) fails that import.
    del lp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


async def _reads(client, job_id: str, n: int) -> None:
    for _ in range(n):
        await client.status(job_id)


def test_a_lookup_by_id_right_after_submit_finds_the_job(client, thread_worker):
    """nq.job(id) right after nq.submit(...) must find the job even while its store is in flight."""
    import naq_nb as nq
    thread_worker("default", concurrency=4)
    sub = nq.options(client=client, queue="default")
    sub.submit(jobs.add, 0, 0).result(timeout=30)  # connected, layout ready: later submits are handed over
    ids = [sub.submit(jobs.add, i, i).job_id for i in range(50)]
    assert [nq.job(i, client=client).result(timeout=30) for i in ids] == [2 * i for i in range(50)]


def test_a_dependent_is_sent_only_once_its_dependency_is_stored(client):
    """A dependency handed over and not acknowledged yet: its dependent waits for that store. Sent at
    once, it could reach a worker before the dependency's record (another stream) and be failed."""
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)  # connected, layout ready: later plain enqueues are handed over
    in_flight = client._stores.begin("dep-in-flight")  # a store whose acknowledgements have not come
    sent: concurrent.futures.Future = concurrent.futures.Future()
    dependent = q.configure(depends_on="dep-in-flight")
    t = threading.Thread(target=lambda: sent.set_result(dependent.enqueue_sync(jobs.add, 1, 1)))
    t.start()
    try:
        with pytest.raises(concurrent.futures.TimeoutError):
            sent.result(timeout=0.5)  # held back while the dependency's store is in flight
    finally:
        client._stores.stored("dep-in-flight", in_flight)  # else the client's close waits for it
    job = sent.result(timeout=30)
    t.join(30)
    assert client.status_sync(job.job_id)["depends_on"] == ["dep-in-flight"]


def test_a_reader_that_gives_up_does_not_cancel_the_store(client, frozen):
    """A read timing out (or Ctrl-C) ends only that wait: the job's store still reports to others."""
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    job = q.enqueue_sync(jobs.add, 1, 2)  # handed over, never acknowledged

    async def give_up() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(client.result(job.job_id), 0.2)

    asyncio.run(give_up())
    assert not any(f.cancelled() for f in client._stores.all_pending())
    with pytest.raises(JobNotStoredError, match=job.job_id):
        client.status_sync(job.job_id)  # not CancelledError: the store's own failure


def test_an_enqueue_handed_over_is_never_reported_as_failed_by_that_call(client, frozen, monkeypatch):
    """A failure that lands while the current job is being encoded is raised by the next call, not by
    the call whose job went out (its caller would retry a job that runs)."""
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    frozen()
    first = q.enqueue_sync(jobs.add, 1, 1)
    real = jobsend.prepare_unacked

    def slow_prepare(b, job):
        out = real(b, job)
        concurrent.futures.wait(client._stores.all_pending(), 10)  # the first store fails meanwhile
        return out

    monkeypatch.setattr("naq_nb.client.client.prepare_unacked", slow_prepare)
    second = core_queue.make_job(jobs.add, (2, 2), None, None, queue="nobody")
    client.enqueue_jobs_sync([second])  # handed over in this thread: returns, whatever happened to `first`
    monkeypatch.setattr("naq_nb.client.client.prepare_unacked", real)
    with pytest.raises(JobNotStoredError, match=first.job_id):
        q.enqueue_sync(jobs.add, 3, 3)  # the next call reports it


def _fork_child_enqueues(client: Client) -> None:
    Queue("nobody", client=client).enqueue_sync(jobs.add, 5, 5)  # the child then ends with os._exit


def test_a_forked_child_stores_its_enqueue_before_it_exits(client):
    """A multiprocessing child (fork) inherits the client but not its loop, sockets or in-flight stores,
    and ends with os._exit (no exit flush): its enqueue must be acknowledged before the call returns."""
    import multiprocessing

    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    before = client.queue_size_sync("nobody")
    child = multiprocessing.get_context("fork").Process(target=_fork_child_enqueues, args=(client,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert client.queue_size_sync("nobody") == before + 1


def test_a_script_that_stops_its_own_server_at_exit_stores_every_enqueue_first(tmp_path):
    """atexit stops a script's EmbeddedServer; the exit flush of enqueues in flight must run before it."""
    import subprocess
    import sys

    from naq_nb.core.server import EmbeddedServer
    from helpers import ROOT

    store = tmp_path / "js"
    script = f"""
import operator
from naq_nb.core.server import EmbeddedServer
from naq_nb import Queue
from naq_nb.core.queue import make_job
srv = EmbeddedServer(store_dir={str(store)!r}).start()
q = Queue("nobody", srv.url)
q.enqueue_sync(operator.add, 0, 1)
for i in range(1, 2000):  # handed over from this thread: many still in flight when the script ends
    q.client.enqueue_jobs_sync([make_job(operator.add, (i, 1), None, None, queue="nobody")])
"""
    env = {k: v for k, v in os.environ.items() if k != "NAQ_PREFIX"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    srv = EmbeddedServer(store_dir=store).start()
    try:
        c = Client(srv.url, settings=None)
        assert c.queue_size_sync("nobody") == 2000
        c.close_sync()
    finally:
        srv.stop()


def test_enqueues_made_in_an_atexit_hook_are_stored_when_they_return(own_nats_server):
    """naq_nb first used inside an atexit hook: the exit flush registers its own hook then, which
    CPython never runs, so enqueues handed over without their acknowledgement could be lost with
    nothing said. Once the interpreter is exiting, each enqueue waits for its acknowledgement: the
    hook's hard exit right after the last one loses nothing."""
    import subprocess
    import sys

    from helpers import ROOT

    script = f"""
import atexit, operator, os

def at_exit():
    from naq_nb import enqueue_sync
    for i in range(200):
        enqueue_sync(operator.add, i, 1, queue_name="atexit", nats_url={own_nats_server.url!r})
    os._exit(0)  # what has not been stored by now never will be

atexit.register(at_exit)
"""
    env = {k: v for k, v in os.environ.items() if k != "NAQ_PREFIX"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    c = Client(own_nats_server.url, settings=None)
    try:
        assert c.queue_size_sync("atexit") == 200
    finally:
        c.close_sync()


@pytest.mark.parametrize("clients", [1, 4])
def test_a_script_that_configured_no_logging_still_hears_at_exit_that_jobs_may_be_lost(own_nats_server, clients):
    """The package's NullHandler silences Python's last-resort output: the exit warning about enqueues
    the server never acknowledged must reach stderr anyway, or a plain script loses jobs silently.
    Every client is checked within the exit's bound (one after another, the third was never reached)."""
    import signal
    import subprocess
    import sys

    from helpers import ROOT

    script = f"""
import operator, sys
from naq_nb import Client, Queue
qs = [Queue("nobody", client=Client({own_nats_server.url!r})) for _ in range({clients})]
for q in qs:
    q.enqueue_sync(operator.add, 0, 1)
    q.client.flush_sync()
print("ready", flush=True)
sys.stdin.readline()  # the test freezes the server meanwhile
for n, q in enumerate(qs):
    for i in range(10 + n):
        q.enqueue_sync(operator.add, i, 1)
"""
    # Acknowledgements fail only after the publish timeout: longer than the exit waits for any one client.
    env = {**{k: v for k, v in os.environ.items() if k != "NAQ_PREFIX"}, "NAQ_PUBLISH_TIMEOUT": "20"}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pid = own_nats_server.proc.pid
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: all_threads_stopped(pid), timeout=10)  # else it may still acknowledge the first
        _, err = child.communicate("go\n", timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
        if child.poll() is None:
            child.kill()
    assert "naq_nb: error:" in err and "not acknowledged at exit" in err, err[-2000:]
    reported = sorted(int(line.split("naq_nb: error: ")[1].split()[0]) for line in err.splitlines()
                      if "not acknowledged at exit" in line)
    assert reported == [10 + n for n in range(clients)], err[-2000:]


@pytest.mark.parametrize("api", ["many", "one_by_one"])
def test_enqueues_past_the_send_buffer_of_a_frozen_server_fail_within_the_publish_timeout(own_nats_server, api):
    # 200 jobs of 400 KB fill nats-py's 64 MiB send buffer while the server reads nothing (SIGSTOP:
    # no reset, no close). nats-py's forced flush then waits for ever; the enqueue must fail within its
    # publish timeout, while the server is still frozen, naming the jobs as not stored.
    from naq_nb.core.settings import Settings

    c = Client(own_nats_server.url, settings=Settings.from_env(environ={}, nats_url=own_nats_server.url,
                                                                publish_timeout=1.0))
    q = Queue("nobody", client=c)
    q.enqueue_sync(jobs.add, 0, 1)
    c.flush_sync()
    big = "x" * 400_000
    pid = own_nats_server.proc.pid

    def enqueue() -> None:
        if api == "many":
            q.enqueue_many_sync(jobs.add, [(big, "")] * 200)
        else:
            for _ in range(200):
                q.enqueue_sync(jobs.add, big, "")
            c.flush_sync()

    os.kill(pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            done = pool.submit(enqueue)
            with pytest.raises(JobNotStoredError, match="not stored"):
                done.result(timeout=60)  # the server stays frozen until it has answered
    finally:
        os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(JobNotStoredError):  # (reported above already; sent jobs may yet be stored)
            c.close_sync()


# --- what a close() ends ---------------------------------------------------------------------------
def _waiting_reads(broker) -> int:
    """Result waits on ``broker``'s connection (each registers its close hook while it waits)."""
    from naq_nb.core.results import _ReadBacks
    return sum(isinstance(getattr(cb, "__self__", None), _ReadBacks) for cb in broker._close_hooks)


def test_a_future_pending_when_its_client_closes_fails_saying_so(client, thread_worker):
    # Nothing could resolve it any more (nq.local()'s stop closes its client too): it used to wait for ever.
    fut = JobFuture.attach(Queue("closing", client=client).enqueue_sync(jobs.add, 40, 2).job_id, client)
    client.close_sync()
    with pytest.raises(NaqConnectionError, match=f"client was closed before job {fut.job_id} ended"):
        fut.result(timeout=20)
    thread_worker("closing")  # the job goes on; attached again, the client reconnects and follows it
    assert JobFuture.attach(fut.job_id, client).result(timeout=30) == 42


def test_a_result_read_waiting_when_its_client_closes_ends_at_once(client):
    job = Queue("nobody", client=client).enqueue_sync(jobs.add, 1, 2)
    out: dict = {}

    def read() -> None:
        try:
            client.result_sync(job.job_id, timeout=60)
        except BaseException as exc:  # handed to the test
            out["error"] = exc
    t = threading.Thread(target=read)
    t.start()
    wait_until(lambda: client._broker is not None and _waiting_reads(client._broker) == 1, timeout=10)
    client.close_sync()
    t.join(20)
    assert not t.is_alive(), "the read still waits after its client closed"
    assert isinstance(out.get("error"), NaqConnectionError) and "its client was closed" in str(out["error"])


def test_an_async_read_waiting_when_its_client_closes_ends_at_once(client):
    async def main():
        q = Queue("nobody", client=client)
        job = await q.enqueue(jobs.add, 1, 2)
        for _ in range(2):  # from its second call, this loop has a connection of its own
            await client.status(job.job_id)
        read = asyncio.ensure_future(client.result(job.job_id, timeout=60))
        here = client._here[asyncio.get_running_loop()].result()
        for _ in range(1000):
            if _waiting_reads(here) == 1 or read.done():
                break
            await asyncio.sleep(0.01)
        assert _waiting_reads(here) == 1, "the read is not waiting on this loop's connection"
        await asyncio.to_thread(client.close_sync)
        with pytest.raises(NaqConnectionError, match="its client was closed"):
            await asyncio.wait_for(read, 20)
    _in_thread(lambda: asyncio.run(main()))


def test_a_close_while_a_callers_loop_connects_is_no_cancel_of_its_call(client, monkeypatch):
    # close() from another thread while an async caller's loop makes its own connection: the call fails
    # saying the client was closed (not CancelledError, which reads as its own task's cancellation), and
    # the connection made meanwhile is closed, not left half-made.
    from naq_nb.client.loop import in_loop_thread
    from naq_nb.core.broker import Broker
    real, made = Broker.connect.__func__, []
    started, release = threading.Event(), threading.Event()

    async def gated(cls, *args, **kwargs):
        if not in_loop_thread():  # the caller loop's connection: held until the close has come
            started.set()
            await asyncio.to_thread(release.wait, 20)
        b = await real(cls, *args, **kwargs)
        made.append(b)
        return b

    monkeypatch.setattr(Broker, "connect", classmethod(gated))

    async def main():
        job = await Queue("nobody", client=client).enqueue(jobs.add, 1, 2)
        await client.status(job.job_id)  # the first call runs on the background loop
        second = asyncio.ensure_future(client.status(job.job_id))  # the second connects this loop
        assert await asyncio.to_thread(started.wait, 20)
        await asyncio.to_thread(client.close_sync)
        release.set()
        with pytest.raises(NaqConnectionError, match="closed while this call connected"):
            await asyncio.wait_for(second, 20)
        here = made[-1]
        for _ in range(1000):
            if here.nc.is_closed:
                break
            await asyncio.sleep(0.01)
        assert here.nc.is_closed, "the connection made for the loop was left open"
        assert (await client.status(job.job_id))["status"] == "queued"  # a later call reconnects
    _in_thread(lambda: asyncio.run(main()))


@pytest.mark.parametrize("then", ["exit", "another loop"])
def test_a_loop_closed_without_asyncio_run_leaves_no_pending_tasks(nats_server, naq_prefix, then):
    """`loop = asyncio.new_event_loop(); loop.run_until_complete(...); loop.close()`: no asyncgen
    shutdown, so the connection naq_nb made for that loop kept its reader tasks pending on a closed
    loop, and "Task was destroyed but it is pending!" tracebacks came at gc (once another loop's call
    swept it away) or at exit. The loop's close now closes that connection first."""
    import subprocess
    import sys

    from helpers import ROOT

    script = f"""
import asyncio, gc
import naq_nb as nq
import jobs

async def main():
    job = await nq.enqueue(jobs.add, 1, 2, queue_name="nobody", nats_url={nats_server.url!r})
    for _ in range(3):  # from its second call on, a loop gets a connection of its own
        await nq.get_job_status(job, nats_url={nats_server.url!r})

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
loop.close()
del loop
gc.collect()
if {then == "another loop"}:
    asyncio.run(main())
    gc.collect()
print("ok")
"""
    env = {**os.environ, "NAQ_PREFIX": naq_prefix, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "Task was destroyed" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr[-2000:]
