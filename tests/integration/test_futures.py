"""JobFuture semantics against a real nats-server: results, exceptions, callbacks, wait/as_completed,
await from other loops, cancel, push updates, re-attach from a new process."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import naq_nb as nq
import naq_nb.client.future as future_mod
from naq_nb.client import session
from naq_nb.client.future import JobFuture
from naq_nb.client.loop import run_sync
from naq_nb.client.watch import get_watch
from naq_nb.core.errors import JobExecutionError

import jobs
from helpers import ROOT, wait_until


def test_result_status_and_record(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.add, 1, 2)
    assert isinstance(fut, cf.Future) and isinstance(fut, JobFuture)
    assert fut.result(timeout=20) == 3
    assert fut.done() and not fut.cancelled() and fut.exception() is None
    wait_until(lambda: fut.record.get("finished_at"))
    assert fut.status == "succeeded"
    rec = fut.record
    assert rec["worker"] and rec["attempts"] == 1 and rec["func"] == "jobs.add"
    assert fut.duration is not None and fut.duration >= 0
    assert fut.job is not None and fut.job.job_id == fut.job_id


def test_exception_keeps_original_type_and_remote_traceback(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.boom, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        fut.result(timeout=20)
    assert isinstance(info.value, JobExecutionError)
    assert "def boom" in info.value.remote_traceback or "boom" in info.value.remote_traceback
    assert "ValueError: bad input" in info.value.remote_traceback
    exc = fut.exception()
    assert isinstance(exc, ValueError)
    assert fut.status == "failed" and "bad input" in fut.record.get("error", "")

    custom = nq.submit(jobs.custom_fail)
    exc = custom.exception(timeout=20)
    assert isinstance(exc, jobs.CustomError) and exc.code == 42 and exc.detail == "custom"


def test_done_callbacks_fire_once_and_late_ones_immediately(nb_client, thread_worker):
    thread_worker()
    seen: list[tuple[str, object]] = []
    fired = threading.Event()

    def cb(f: cf.Future) -> None:
        seen.append((threading.current_thread().name, f.result()))
        fired.set()

    fut = nq.submit(jobs.add, 2, 3)
    fut.add_done_callback(cb)
    assert fired.wait(20)
    fut.result(5)
    late: list[object] = []
    fut.add_done_callback(lambda f: late.append(f.result()))
    assert late == [5]  # already done: runs at once, in the caller's thread
    assert [v for _, v in seen] == [5]


def test_a_done_callback_may_call_naq_nb_and_wait_on_another_job(nb_client, thread_worker):
    """Callbacks ran on naq_nb's loop thread, which resolves every future: a submit in one raised
    (and concurrent.futures only logged it), and a wait in one held up every other result until
    its timeout, which then blamed the job ("it is queued")."""
    thread_worker(concurrency=2)
    out: dict[str, object] = {}
    done = threading.Event()

    def chain(f: cf.Future) -> None:
        try:
            out["thread"] = threading.current_thread().name
            out["chained"] = nq.submit(jobs.add, f.result(), 1).result(timeout=20)
        except BaseException as exc:  # handed to the test
            out["error"] = exc
        finally:
            done.set()

    nq.submit(jobs.add, 2, 3).add_done_callback(chain)
    assert done.wait(30), "the callback ended"
    assert out.get("chained") == 6, out
    assert out["thread"].startswith("naq-callbacks")
    assert nq.submit(jobs.add, 1, 1).result(timeout=20) == 2  # nothing stalled meanwhile


def test_wait_and_as_completed(nb_client, thread_worker):
    thread_worker(concurrency=4)
    futs = nq.map(jobs.sleep_for, [0.3, 0.0, 0.1])
    failing = nq.submit(jobs.boom)
    parked = nq.options(queue="nobody").submit(jobs.add, 1, 1)
    assert parked.cancel()
    done, not_done = cf.wait(futs + [failing, parked], timeout=30)
    assert not not_done and len(done) == 5
    order = list(cf.as_completed(futs, timeout=30))
    assert sorted(f.result() for f in order) == [0.0, 0.1, 0.3]
    assert cf.wait([failing], return_when=cf.FIRST_EXCEPTION, timeout=5).done == {failing}


def test_await_from_another_event_loop(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.add, 20, 22)

    async def cell() -> object:
        # asyncio.run makes a loop that is not naq_nb's loop thread (like a Jupyter kernel's)
        return await fut

    assert asyncio.run(cell()) == 42

    async def cell2() -> object:
        f = await session.submit_async(jobs.async_add, 1, 1)
        return await f.result_async(timeout=20)

    assert asyncio.run(cell2()) == 2


async def test_await_inside_running_test_loop(nb_client, thread_worker):
    thread_worker()
    f = await session.submit_async(jobs.add, 5, 5)
    assert await f == 10
    failing = await session.submit_async(jobs.boom, "async")
    with pytest.raises(ValueError, match="async"):
        await failing
    parked = await nq.options(queue="nobody").submit_async(jobs.add, 1, 1)
    with pytest.raises(TimeoutError):
        await parked.result_async(timeout=0.2)
    assert not parked.done()  # a timed-out await does not cancel the job
    assert await parked.cancel_async() is True
    with pytest.raises(cf.CancelledError):
        await parked


def test_cancel_queued_job(nb_client):
    fut = nq.options(queue="idle").submit(jobs.add, 1, 2)  # no worker serves "idle"
    wait_until(lambda: nb_client.queue_size_sync("idle") == 1)
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done() and fut.status == "cancelled"
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=1)
    assert nb_client.queue_size_sync("idle") == 0  # removed from the stream
    assert nb_client.status_sync(fut.job_id)["status"] == "cancelled"
    assert fut.cancel() is True  # cancelling a cancelled future again is a no-op that reports True


def test_bad_timeouts_raise_naming_the_call_and_the_job_goes_on(nb_client):
    fut = nq.options(queue="idle").submit(jobs.add, 1, 2)  # no worker serves "idle"
    for bad in ("1", float("nan"), -1, True):
        with pytest.raises(ValueError, match=r"result\(timeout=...\) must be seconds >= 0 or None"):
            fut.result(timeout=bad)
        with pytest.raises(ValueError, match=r"exception\(timeout=...\) must be seconds >= 0"):
            fut.exception(timeout=bad)
        with pytest.raises(ValueError, match="timeout must be seconds >= 0"):
            asyncio.run(fut.result_async(timeout=bad))
    with pytest.raises(TimeoutError, match=f"job {fut.job_id} .* did not finish within 0.1s; it is queued"):
        fut.exception(timeout=0.1)
    assert not fut.done() and nb_client.queue_size_sync("idle") == 1, "the job is still queued"
    assert fut.cancel() is True


def test_cancel_running_and_finished(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.async_sleep_for, 60)
    wait_until(lambda: fut.status == "running", timeout=20)
    assert fut.cancel() is True
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=5)
    ended = nq.submit(jobs.add, 1, 1)
    assert ended.result(timeout=20) == 2
    assert ended.cancel() is False and not ended.cancelled()


def test_on_update_pushes_progress_and_logs(nb_client, thread_worker):
    updates: list[tuple[str, str]] = []
    fut = nq.options(queue="later").submit(jobs.with_progress, 3)
    unsubscribe = fut.on_update(lambda f: updates.append((threading.current_thread().name, f.status)))
    thread_worker("later")  # only now can the job run: every change after on_update() is seen
    fut.result(timeout=20)
    wait_until(lambda: any(s == "succeeded" for _, s in updates))
    assert {name for name, _ in updates} == {"naq-loop"}
    wait_until(lambda: fut.record.get("finished_at"))
    assert fut.progress == {"done": 3, "total": 3, "message": "step 3"}
    assert "line 3" in "\n".join(fut.logs)
    unsubscribe()
    n = len(updates)
    fut._notify()  # what the watch calls on a change
    assert len(updates) == n


def test_a_blocking_wait_in_an_on_update_callback_raises_instead_of_hanging_the_loop(nb_client, thread_worker):
    """on_update callbacks run on naq_nb's loop thread, which resolves every future: a blocking
    wait there could only end by its timeout (with none it hung every naq_nb call in the process
    for ever). It raises as a sync call there does; a wait that cannot block stays allowed."""
    thread_worker()
    parked = nq.options(queue="nobody").submit(jobs.add, 1, 1)  # never resolves: nothing serves it
    group = nq.options(queue="nobody").map(jobs.add, [1], [1])
    out: dict[str, object] = {}
    fired = threading.Event()
    waits = {
        "result": lambda: parked.result(timeout=0.5),
        "exception": lambda: parked.exception(timeout=0.5),
        "gather": lambda: nq.gather([parked], timeout=0.5),
        "wait": lambda: nq.wait([parked], timeout=0.5),
        "as_completed": lambda: list(nq.as_completed([parked], timeout=0.5)),
        "group.wait": lambda: group.wait(timeout=0.5),
        "group.results": lambda: group.results(timeout=0.5),
    }

    def cb(f: JobFuture) -> None:
        if not f.done() or fired.is_set():
            return
        out["own"] = f.result()  # its own job has ended: reading it cannot block
        for name, call in waits.items():
            try:
                out[name] = call()
            except BaseException as exc:  # handed to the test
                out[name] = exc
        fired.set()

    fut = nq.options(queue="later").submit(jobs.add, 2, 3)
    fut.on_update(cb)
    thread_worker("later")
    assert fired.wait(30), "the callback ran"
    assert out.pop("own") == 5
    for name, got in out.items():
        assert isinstance(got, RuntimeError) and "naq_nb's own loop thread" in str(got), (name, got)
    assert nq.submit(jobs.add, 1, 1).result(timeout=20) == 2  # the loop thread was never held
    assert parked.cancel() and group.cancel() == 1


def test_many_futures_share_two_subscriptions(nb_client, thread_worker):
    thread_worker(concurrency=8)
    b = run_sync(nb_client.broker())
    first = nq.submit(jobs.add, 0, 0)
    first.result(timeout=20)
    subs_before = len(b.nc._subs)
    futs = nq.map(jobs.add, range(300), range(300))
    assert len(b.nc._subs) == subs_before  # no subscription per job
    assert [f.result(timeout=60) for f in futs] == [2 * i for i in range(300)]
    assert get_watch(nb_client) is get_watch(nb_client)


def test_resolved_futures_linger_then_leave_the_watch(nb_client, thread_worker, monkeypatch):
    monkeypatch.setattr("naq_nb.client.watch._LINGER", 0.5)
    thread_worker(concurrency=4)
    watch = get_watch(nb_client)
    futs = nq.map(jobs.add, range(40), range(40))
    assert [f.result(timeout=60) for f in futs] == [2 * i for i in range(40)]
    # Kept a little while after their result (a final status record may still be on its way), then
    # gone, every one, by one timer for all of them (not a loop handle each).
    wait_until(lambda: watch.registered == 0, timeout=10)
    assert not watch._lingering and watch._linger_timer is None
    late = nq.submit(jobs.add, 1, 1)  # the timer starts again for the next one
    assert late.result(timeout=20) == 2
    wait_until(lambda: watch.registered == 0, timeout=10)


def test_a_watch_with_no_future_left_stops_hearing_every_other_clients_jobs(nb_client, thread_worker, settings,
                                                                            monkeypatch):
    """The futures' watch subscribes to every status and every stored result of the prefix. It stayed
    subscribed once its last future was gone: an idle notebook that had run one job got every record
    of every other client's jobs for as long as it lived (3,000 jobs of 2 KB results: 9,000 messages,
    8 MB, to each such notebook). With no future left it unsubscribes; the next one subscribes again."""
    from naq_nb.client.client import Client
    monkeypatch.setattr("naq_nb.client.watch._LINGER", 0.2)
    monkeypatch.setattr("naq_nb.client.watch._IDLE_AFTER", 0.2, raising=False)
    thread_worker(concurrency=8)
    assert nq.submit(jobs.add, 1, 1).result(timeout=20) == 2
    watch = get_watch(nb_client)
    wait_until(lambda: watch.registered == 0 and not watch._subs, timeout=10)
    nc = run_sync(nb_client.broker()).nc
    heard = nc.stats["in_msgs"]
    other = Client(settings=settings)
    try:
        futs = nq.options(client=other).map(jobs.add, range(50), range(50))
        assert [f.result(timeout=60) for f in futs] == [2 * i for i in range(50)]
    finally:
        other.close_sync()
    assert nc.stats["in_msgs"] - heard < 10, nc.stats["in_msgs"] - heard  # (each job: 3 records or more)
    assert nq.submit(jobs.add, 2, 2).result(timeout=20) == 4  # subscribed again


def test_attach_to_finished_and_to_pending_job(nb_client, thread_worker):
    done = nq.submit(jobs.add, 3, 4)
    parked = nq.options(queue="later").submit(jobs.add, 5, 6)
    thread_worker()
    assert done.result(timeout=20) == 7
    again = JobFuture.attach(done.job_id)  # the state is fetched on attach
    assert again.done() and again.result() == 7 and again.status == "succeeded"
    pending = JobFuture.attach(parked.job_id, client=nb_client)
    assert not pending.done() and pending.status == "queued"
    thread_worker("later")
    assert pending.result(timeout=20) == 11


def test_reattach_from_a_new_process(nb_client, thread_worker, nats_server):
    fut = nq.options(queue="later").submit(jobs.add, 40, 2)
    script = textwrap.dedent(f"""
        import naq_nb as nq
        nq.connect({nats_server.url!r})
        j = nq.job({fut.job_id!r})
        print("attached", j.status, flush=True)
        print("result", j.result(timeout=30), j.status, flush=True)
        try:
            nq.job("no-such-job")
        except nq.JobNotFoundError as exc:
            print("missing", type(exc).__name__, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["attached", "queued"]
        thread_worker("later")  # the job runs only now: the other process learns it by push
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == ["result 42 succeeded", "missing JobNotFoundError"]


def test_repr_and_display_hook(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.add, 1, 1)
    fut.result(timeout=20)
    wait_until(lambda: fut.record.get("finished_at"))
    assert fut.job_id in repr(fut) and "succeeded" in repr(fut)
    html = fut._repr_html_()
    assert fut.job_id in html and "succeeded" in html and "jobs.add" in html
    shown: list[JobFuture] = []
    future_mod.display_hook = shown.append
    try:
        fut._ipython_display_()
    finally:
        future_mod.display_hook = None
    assert shown == [fut]


def _put_result(client, job_id: str, value: bytes | None) -> None:
    """Overwrite (or delete, with None) a job's stored result by hand."""

    async def put() -> None:
        b = await client.broker()
        kv = await b.kv(b.layout.results_bucket)
        await (kv.delete(job_id) if value is None else kv.put(job_id, value))

    run_sync(put())


def _ended_then_result_replaced(nb_client, stored):
    """A job run to its end, then its stored result replaced by ``stored`` (None: deleted); a future
    attached to it afresh."""
    done = nq.submit(jobs.add, 1, 1)
    assert done.result(timeout=20) == 2
    # The result can reach the future before the final status (two streams): wait for that one too.
    wait_until(lambda: nb_client.status_sync(done.job_id)["status"] == "succeeded")
    _put_result(nb_client, done.job_id, stored)
    return JobFuture.attach(done.job_id)


@pytest.mark.parametrize(
    "stored, error, match",
    [(None, nq.JobNotFoundError, "succeeded, but its result is gone"), (b"[1]\n", nq.SerializationError, "unreadable")],
    ids=["gone", "forged"],
)
def test_attaching_to_a_job_whose_result_is_gone_or_unreadable_fails_naming_it(nb_client, thread_worker, stored,
                                                                              error, match):
    # Its status says it ended; the result was deleted (or expired), or forged: the future must fail
    # saying so, not wait for ever (nor until its timeout) for a result that will not come.
    thread_worker()
    again = _ended_then_result_replaced(nb_client, stored)
    with pytest.raises(error, match=match):
        again.result(timeout=20)


def test_a_group_wait_that_times_out_on_an_unknown_job_names_it(nb_client, thread_worker):
    """gather / as_completed over finished, failed and never-enqueued jobs: the timeout names the
    unknown one as unknown to the server, not as a job that "keeps running"."""
    thread_worker(concurrency=2)
    good, bad = nq.submit(jobs.add, 1, 2), nq.submit(jobs.boom)
    ghost = JobFuture.attach("never-enqueued-here")
    futs = [good, bad, ghost]
    errors = []
    with pytest.raises(TimeoutError) as gathered:
        nq.gather(futs, timeout=1, errors="return")
    errors.append(gathered.value)
    with pytest.raises(TimeoutError) as listed:
        list(nq.as_completed(futs, timeout=0.2))
    errors.append(listed.value)

    async def gather_async():
        return await nq.gather_async(futs, timeout=0.2)

    with pytest.raises(TimeoutError) as awaited:
        asyncio.run(gather_async())
    errors.append(awaited.value)
    for exc in errors:
        assert "1 of 3" in str(exc) and "never-enqueued-here" in str(exc) and "no record" in str(exc), str(exc)
        assert "keep running" not in str(exc), str(exc)
    assert good.result(0) == 3 and isinstance(bad.exception(0), ValueError)


def test_a_timeout_on_a_job_that_ended_does_not_say_it_keeps_running(nb_client, thread_worker):
    # Its status says succeeded, its result is not here yet (here: deleted; the look-again takes 1 s):
    # a short wait that runs out must not send the caller to wait for a run that is over.
    thread_worker()
    again = _ended_then_result_replaced(nb_client, None)
    with pytest.raises(TimeoutError) as timed_out:
        again.result(timeout=0.1)
    assert "keeps running" not in str(timed_out.value) and "ended" in str(timed_out.value), str(timed_out.value)


def _child_waits(fut, sync: bool) -> None:
    if sync:
        value = fut.result(timeout=20)
    else:
        value = asyncio.run(fut.result_async(timeout=20))
    os._exit(0 if value == 3 else 3)


@pytest.mark.parametrize("sync", [True, False], ids=["result", "await"])
def test_a_forked_child_waiting_on_an_inherited_future_gets_its_result(nb_client, thread_worker, sync):
    """The child has none of its parent's subscriptions: the future must not sit "queued" there."""
    import multiprocessing
    fut = nq.options(queue="after_fork").submit(jobs.add, 1, 2)  # runs only once the child waits
    nb_client.flush_sync()
    child = multiprocessing.get_context("fork").Process(target=_child_waits, args=(fut, sync))
    child.start()
    thread_worker(queues="after_fork")
    child.join(40)
    assert child.exitcode == 0, child.exitcode
    assert fut.result(timeout=20) == 3
