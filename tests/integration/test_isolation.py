"""Execution model: job code that crashes, hangs, exits or blocks the loop never ends or stalls a worker."""

import asyncio
import functools
import logging
import os
import subprocess
import sys
import time

import pytest

from naq_nb.core.errors import JobNotFinishedError, JobTimeoutError
from naq_nb.core.failed import list_failed
from naq_nb.core.cancel import cancel_job
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result, wait_for_result
from naq_nb.core.worker import Worker

import jobs
from helpers import pid_gone, worker_process


async def _until(cond, timeout=30.0, what="condition"):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


@pytest.mark.parametrize("fn, error", [
    (jobs.segfault, "worker process died: signal 11 (SIGSEGV)"),
    (jobs.hard_exit, "worker process died: exited with code 1"),
    (jobs.sys_exit, "SystemExit: 2"),
    (jobs.interrupt, "KeyboardInterrupt"),
], ids=["segfault", "os_exit", "sys_exit", "keyboard_interrupt"])
async def test_crashing_job_fails_with_reason_and_worker_goes_on(broker, start_worker, fn, error):
    w = await start_worker(concurrency=1)
    q = Queue(broker)
    bad = await q.enqueue(fn)
    rec = await wait_for_result(broker, bad.job_id, 30)
    assert rec.status == "failed" and error in rec.meta["error"]
    st = await get_status(broker, bad.job_id)
    assert st["status"] == "failed" and error in st["error"]
    ok = await q.enqueue(jobs.add, 1, 2)
    assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 3, "the same one-slot worker goes on"
    assert w.state in ("idle", "busy")


async def test_a_job_process_dying_with_a_forked_helper_fails_at_once_and_takes_the_helper(
        broker, start_worker, tmp_path):
    """The helper holds the job process's pipe open: the job must still fail when its process ends
    (not when the helper does), and the helper must not outlive it."""
    await start_worker(concurrency=1)
    pid_file = tmp_path / "helper.pid"
    j = await Queue(broker).enqueue(jobs.exit_leaving_a_forked_child, str(pid_file))
    try:
        rec = await wait_for_result(broker, j.job_id, 30)
        assert rec.status == "failed" and "worker process died: exited with code 4" in rec.meta["error"]
        helper = int(pid_file.read_text())

        async def helper_gone() -> bool:
            return pid_gone(helper)
        await _until(helper_gone, what="the job's helper process killed")
    finally:
        if pid_file.exists() and not pid_gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)


async def test_a_helper_a_finished_job_left_running_ends_with_its_worker(broker, start_worker):
    """A job that returns while a process it started runs on: the worker's stop takes the helper with
    the job process (idle job processes end gently, then their process group is killed)."""
    w = await start_worker(concurrency=1)
    j = await Queue(broker).enqueue(jobs.start_helper)
    helper = (await wait_for_result(broker, j.job_id, 30)).unwrap()
    try:
        assert not pid_gone(helper), "the helper should still run while its worker does"
        await w.stop()

        async def helper_gone() -> bool:
            return pid_gone(helper)
        await _until(helper_gone, timeout=15, what="the helper killed with its worker's job processes")
    finally:
        if not pid_gone(helper):
            os.kill(helper, 9)


async def test_segfault_record_carries_the_python_stack(broker, start_worker):
    await start_worker(concurrency=1)
    j = await Queue(broker).enqueue(jobs.segfault)
    rec = await wait_for_result(broker, j.job_id, 30)
    assert "Segmentation fault" in rec.meta["traceback"] and "segfault" in rec.meta["traceback"]


async def test_hung_sync_job_times_out_kills_its_process_and_frees_the_slot(broker, start_worker, tmp_path):
    await start_worker(concurrency=1)
    q = Queue(broker)
    pidfile = tmp_path / "pid"
    hung = await q.configure(timeout=2).enqueue(jobs.hang, str(pidfile))
    after = await q.enqueue(jobs.add, 2, 2)
    rec = await wait_for_result(broker, hung.job_id, 30)
    with pytest.raises(JobTimeoutError):
        rec.unwrap()
    assert (await wait_for_result(broker, after.job_id, 30)).unwrap() == 4, "the only slot is free again"
    pid = int(pidfile.read_text().split()[0])
    await _until(lambda: asyncio.sleep(0, pid_gone(pid)), what="the hung job's process was killed")


async def test_a_stop_that_meets_a_cancel_notice_still_ends_the_slot(broker, start_worker, tmp_path):
    """The job runs in its slot's task: a cancel notice and the worker's stop landing together
    are one CancelledError there. Handling the notice must not swallow the stop."""
    w = await start_worker(concurrency=1)
    pidfile = tmp_path / "pid"
    j = await Queue(broker).enqueue(jobs.hang, str(pidfile))
    await _until(lambda: asyncio.sleep(0, pidfile.exists() and j.job_id in w.running), what="job running")
    d = w.running[j.job_id]
    slot = d.task
    assert slot is not None
    d.cancelled = True
    slot.cancel()  # the notice (as _on_cancel does) ...
    slot.cancel()  # ... and the stop's cancel of the slot, before the slot runs again
    done, _ = await asyncio.wait([slot], timeout=30)
    assert slot in done and slot.cancelled(), "the slot ended with the stop instead of waiting for a next job"


async def test_cancel_running_sync_job_kills_it_and_frees_the_slot(broker, start_worker, tmp_path):
    w = await start_worker(concurrency=1)
    q = Queue(broker)
    pidfile = tmp_path / "pid"
    j = await q.enqueue(jobs.hang, str(pidfile))
    await _until(lambda: asyncio.sleep(0, pidfile.exists() and j.job_id in w.running), what="job running")
    assert await cancel_job(broker, j.job_id)
    rec = await wait_for_result(broker, j.job_id, 30)
    assert rec.status == "cancelled"
    assert (await get_status(broker, j.job_id))["status"] == "cancelled"
    nxt = await q.enqueue(jobs.add, 5, 5)
    assert (await wait_for_result(broker, nxt.job_id, 30)).unwrap() == 10
    pid = int(pidfile.read_text().split()[0])
    await _until(lambda: asyncio.sleep(0, pid_gone(pid)), what="the cancelled job's process was killed")


async def test_base_exceptions_in_thread_mode_and_async_jobs_never_end_the_worker(broker, start_worker):
    await start_worker(concurrency=2, execution="threads")
    q = Queue(broker)
    for fn, error in ((jobs.sys_exit, "SystemExit: 2"), (jobs.interrupt, "KeyboardInterrupt"),
                      (jobs.async_interrupt, "KeyboardInterrupt")):
        j = await q.enqueue(fn)
        rec = await wait_for_result(broker, j.job_id, 30)
        assert rec.status == "failed" and error in rec.meta["error"]
    ok = await q.enqueue(jobs.async_add, 1, 1)
    assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 2


async def test_async_job_blocking_the_loop_neither_hides_its_timeout_nor_runs_twice(broker, settings, tmp_path,
                                                                                    caplog):
    from naq_nb.notebook.local import ServiceThread
    s = settings.with_(ack_wait=2.0)
    runs = tmp_path / "runs"
    # Two workers, each on its own loop in its own thread: the job blocks one, the other is free to take it.
    threads = [ServiceThread(Worker("blocky", settings=s, concurrency=2), f"w{i}").start() for i in range(2)]
    try:
        with caplog.at_level(logging.WARNING, logger="naq_nb.worker"):
            j = await Queue(broker, "blocky").configure(timeout=2).enqueue(jobs.block_loop, str(runs), 7)
            rec = await wait_for_result(broker, j.job_id, 60)
        assert rec.status == "failed", "it ran past its timeout: not succeeded"
        with pytest.raises(JobTimeoutError):
            rec.unwrap()
        assert len(runs.read_text().split()) == 1, "kept alive by the watchdog: never redelivered meanwhile"
        assert any("blocked" in r.getMessage() and j.job_id in r.getMessage() for r in caplog.records), \
            "the watchdog names the job that blocks the loop"
    finally:
        for t in threads:
            t.stop(10)


async def test_thread_mode_job_killing_its_worker_is_dead_lettered(broker, nats_server, tmp_path):
    runs = tmp_path / "runs"
    env = {"NAQ_ACK_WAIT": "1", "NAQ_HEARTBEAT": "1"}  # a killed worker is soon known dead
    j = await Queue(broker, "deadly").enqueue(jobs.kill_own_process, str(runs))
    procs = []
    try:
        for _ in range(8):
            proc = worker_process(nats_server.url, "deadly", "-c", "1", "--execution", "threads", env=env)
            procs.append(proc)
            end = time.monotonic() + 40
            while proc.poll() is None and not await list_failed(broker) and time.monotonic() < end:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                break  # the job is dead-lettered: this worker survives
        [entry] = await list_failed(broker)
        assert entry["job_id"] == j.job_id and "lost" in entry["reason"]
        assert procs[-1].poll() is None, "the last worker was not killed"
        rec = await wait_for_result(broker, j.job_id, 30)
        assert rec.status == "failed"
        assert len(runs.read_text().split()) <= 3, "dead-lettered after its budget, not run forever"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


async def test_printed_output_is_echoed_with_the_job_id(broker, start_worker, capsys):
    await start_worker(echo_output=True)
    j = await Queue(broker).enqueue(jobs.print_lines, 2)
    assert (await wait_for_result(broker, j.job_id, 30)).unwrap() == 2
    st = await get_status(broker, j.job_id)
    assert st["logs"] == ["echo line 1", "echo line 2"], "still in the job's log record"
    out = capsys.readouterr().out
    assert f"[{j.job_id}] echo line 1" in out and f"[{j.job_id}] echo line 2" in out


def test_unknown_execution_mode_is_refused_by_name(tmp_path):
    import naq_nb as nq
    with pytest.raises(ValueError, match="execution must be one of"):
        Worker("default", execution="fork")
    with pytest.raises(ValueError, match="execution must be one of"):
        nq.local(workers=1, execution="fork")
    with pytest.raises(TypeError, match="echo_output"):
        Worker("default", echo_output="yes")
    out = subprocess.run([sys.executable, "-m", "naq_nb.cli.main", "worker", "--execution", "fork"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--execution" in out.stderr and "Traceback" not in out.stderr


def test_local_cluster_survives_a_segfaulting_job():
    import naq_nb as nq
    c = nq.local(workers=1, scheduler=False)
    try:
        job = nq.submit(jobs.segfault)
        with pytest.raises(Exception, match=r"worker process died: signal 11 \(SIGSEGV\)"):
            job.result(timeout=30)
        assert nq.submit(jobs.add, 20, 22).result(timeout=30) == 42, "the kernel's worker goes on"
    finally:
        c.stop()


async def test_result_write_gives_up_within_bounds_and_hands_the_job_back(broker, own_nats_server, start_worker,
                                                                          tmp_path, caplog):
    # Each try is bounded by NAQ_PUBLISH_TIMEOUT when that is below the 5 s cap: 1 s keeps the test short.
    w = await start_worker(concurrency=1, settings=broker.settings.with_(publish_timeout=1.0))
    runs = tmp_path / "runs"
    j = await Queue(broker).enqueue(jobs.mark, str(runs), "x", 3.0)
    await _until(lambda: asyncio.sleep(0, runs.exists()), what="job started")
    own_nats_server.kill()  # the job ends while the server is gone: its result write can't land
    await _until(lambda: asyncio.sleep(0, w.stats["result_write_failed"] >= 1), timeout=60,
                 what="the result write gave up")
    await _until(lambda: asyncio.sleep(0, not w._background), what="no completion left hanging")
    assert not w.running, "the slot is free"
    assert "result write failed 3 times, each within 1s" in caplog.text
    await asyncio.get_running_loop().run_in_executor(None, own_nats_server.restart)
    assert (await wait_for_result(broker, j.job_id, 30)).unwrap() == "x"


async def test_a_first_write_that_cannot_be_sent_is_tried_again_in_the_background(broker, start_worker, caplog):
    # The first try's writes are sent from the slot; one that raises there is tried again by the
    # background completion, as a write whose acknowledgement failed is.
    import nats.errors
    w = await start_worker(concurrency=1)
    real, refused = w.broker.publish_async, []
    results = w.broker.layout.kv_subject(w.broker.layout.results_bucket, "")

    async def refuse_once(subject, *a, **k):
        if subject.startswith(results) and not refused:
            refused.append(subject)
            raise nats.errors.ConnectionClosedError
        return await real(subject, *a, **k)

    w.broker.publish_async = refuse_once
    with caplog.at_level(logging.WARNING, logger="naq_nb.worker"):
        j = await Queue(broker).enqueue(jobs.add, 2, 3)
        assert (await wait_for_result(broker, j.job_id, 30)).unwrap() == 5
    assert refused == [results + j.job_id]
    assert f"job {j.job_id}: result write failed (ConnectionClosedError" in caplog.text
    assert (await get_status(broker, j.job_id))["status"] == "succeeded"
    assert w.stats["result_write_failed"] == 0 and w.stats["processed"] == 1


async def test_undecodable_body_fails_in_the_child_and_the_worker_goes_on(broker, start_worker):
    from naq_nb.core.envelope import encode_job
    await start_worker(concurrency=1)
    q = Queue(broker)
    job = q.make_job(jobs.add, (1, 1))
    headers, _ = encode_job(job, broker.serializer, max_payload=broker.max_payload)
    await broker.js.publish(broker.layout.queue_subject("default"), b"not a pickle", headers=headers)
    # Published by hand, so no "queued" record: the job is known only once its failure is stored.
    await _until(lambda: get_result(broker, job.job_id), what="the failure stored")
    rec = await wait_for_result(broker, job.job_id, 30)
    assert rec.status == "failed" and "cannot unpickle" in rec.meta["error"]
    [entry] = await list_failed(broker)
    assert entry["job_id"] == job.job_id
    assert entry["reason"].startswith("payload cannot be decoded: ") and "cannot unpickle" in entry["reason"]
    ok = await q.enqueue(jobs.add, 2, 3)
    assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 5


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_job_processes_end_when_their_worker_is_killed(broker, nats_server):
    import signal
    proc = worker_process(nats_server.url, "-c", "2")
    try:
        await _until(lambda: asyncio.sleep(0, len(_children_of(proc.pid)) >= 2), timeout=60,
                     what="two job processes started")
        kids = _children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await _until(lambda: asyncio.sleep(0, all(pid_gone(k) for k in kids)), timeout=30,
                     what="orphaned job processes exited")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_jobs_stuck_behind_a_blocked_loop_run_once(broker, settings, tmp_path):
    """Jobs pushed to a worker while its loop is blocked go to another worker; the blocked one drops
    its stale copies when it comes back instead of running them again."""
    from naq_nb.notebook.local import ServiceThread
    s = settings.with_(ack_wait=2.0)
    marks, blk = tmp_path / "marks", tmp_path / "blk"
    a = ServiceThread(Worker("stuck", settings=s, concurrency=1, prefetch=4), "wa").start()
    threads = [a]
    try:
        q = Queue(broker, "stuck")
        blocker = await q.configure(timeout=2).enqueue(jobs.block_loop, str(blk), 6)
        await _until(lambda: asyncio.sleep(0, blk.exists()), what="the loop is blocked")
        js = [await q.enqueue(jobs.mark, str(marks), f"m{i}") for i in range(4)]
        threads.append(ServiceThread(Worker("stuck", settings=s, concurrency=2), "wb").start())
        for j in js:
            assert (await wait_for_result(broker, j.job_id, 60)).status == "succeeded"
        assert (await wait_for_result(broker, blocker.job_id, 60)).status == "failed"
        wa = a.service
        await _until(lambda: asyncio.sleep(0, not wa.watchdog.suspect() and not wa.running and wa.ready.empty()),
                     what="the blocked worker has dealt with what it held")
        assert sorted(marks.read_text().split()) == ["m0", "m1", "m2", "m3"], "each job ran once"
    finally:
        for t in threads:
            t.stop(10)


async def test_a_job_process_killed_while_idle_is_replaced(broker, start_worker):
    import signal
    w = await start_worker(concurrency=1)
    q = Queue(broker)
    assert (await wait_for_result(broker, (await q.enqueue(jobs.add, 1, 1)).job_id, 30)).unwrap() == 2
    [pid] = w.execution.pool.pids
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: asyncio.sleep(0, w.execution.pool.pids != [pid]), what="the dead child noticed")
    assert (await wait_for_result(broker, (await q.enqueue(jobs.add, 2, 2)).job_id, 30)).unwrap() == 4


async def test_every_job_process_is_up_before_the_worker_takes_a_job(broker, start_worker):
    w = await start_worker(concurrency=3)
    assert len(w.execution.pool.pids) == 3, "all children started (at once) before the first pull"
    j = await Queue(broker).enqueue(jobs.add, 2, 3)
    assert (await wait_for_result(broker, j.job_id, 30)).unwrap() == 5


async def test_a_worker_whose_job_processes_cannot_start_still_starts(broker, start_worker, monkeypatch, caplog):
    from naq_nb.core import procpool, worker

    async def cannot_launch(self):
        raise OSError("no python here")
    monkeypatch.setattr(procpool.ProcessPool, "_launch", cannot_launch)
    monkeypatch.setattr(worker, "CHILD_START_WAIT", 0.5)
    with caplog.at_level(logging.WARNING, logger="naq_nb.worker"):
        w = await start_worker(concurrency=2)
    assert w.state == "idle" and not w.execution.pool.pids
    assert any("still starting" in r.getMessage() for r in caplog.records)
    assert any("cannot start a job process" in r.getMessage() for r in caplog.records)


async def test_a_job_process_that_cannot_be_set_up_is_retried_and_the_reason_logged(caplog):
    """Any error setting a child up (here a serializer that cannot be pickled into its first frame)
    is logged and retried: the slot must not be left without a child and without a word."""
    from naq_nb.core.procpool import ProcessPool

    pool = ProcessPool(1, serializer=lambda: None)
    with caplog.at_level(logging.ERROR, logger="naq_nb.worker"):
        pool.start()
        try:
            assert not await pool.wait_ready(1.5)
            assert pool._starting, "still trying to start one"
        finally:
            await pool.close()
    assert any("cannot start a job process" in r.getMessage() and "lambda" in r.getMessage()
               for r in caplog.records)
    assert not pool.pids


async def test_a_worker_that_fails_to_start_leaves_no_job_process(settings, monkeypatch):
    from naq_nb.core.broker import Broker

    async def refuse(self, queue):
        raise RuntimeError("no consumer today")
    monkeypatch.setattr(Broker, "ensure_consumer", refuse)
    w = Worker("default", settings=settings, concurrency=2)
    with pytest.raises(RuntimeError, match="no consumer today"):
        await w.start()
    try:
        assert not w.execution.pool.pids, "its job processes were stopped"
    finally:
        await w.broker.close()


async def test_a_function_found_async_skips_the_job_process_next_time_but_its_name_never_decides(
        broker, start_worker):
    w = await start_worker(concurrency=2)
    sent: list[str] = []
    pool_call = w.execution.pool.call

    async def counted(child, job_id, *a, **k):
        sent.append(job_id)
        return await pool_call(child, job_id, *a, **k)

    w.execution.pool.call = counted
    q = Queue(broker)

    async def run(fn, *args):
        j = await q.enqueue(fn, *args)
        return j.job_id, (await wait_for_result(broker, j.job_id, 30))

    first, rec = await run(jobs.async_add, 1, 1)
    assert rec.unwrap() == 2
    second, rec = await run(jobs.async_add, 2, [2][0])
    assert rec.unwrap() == 4 and sent == [first]  # only the first asked a job process what it is
    # functools.partial objects all carry the name "functools.partial", async or not, and are
    # pickled as objects: their calls are never decoded in the worker.
    p1, rec = await run(functools.partial(jobs.async_add, 1), 1)
    p2, rec2 = await run(functools.partial(jobs.async_add, 2), 2)
    assert (rec.unwrap(), rec2.unwrap()) == (2, 4) and sent[-2:] == [p1, p2]
    sync, rec = await run(functools.partial(jobs.slow_pid, 0))
    assert sent[-1] == sync and rec.unwrap() in w.execution.pool.pids  # a sync function runs in a job process


async def test_an_argument_that_exits_when_unpickled_meets_a_job_process_even_for_a_known_async_function(
        broker, start_worker):
    w = await start_worker(concurrency=2)
    q = Queue(broker)
    learn = await q.enqueue(jobs.async_add, 1, 1)
    assert (await wait_for_result(broker, learn.job_id, 30)).unwrap() == 2
    assert w.execution.async_names == {"jobs.async_add"}
    bad = await q.enqueue(jobs.async_add, jobs.ExitWhenUnpickled(), 1)
    rec = await wait_for_result(broker, bad.job_id, 30)
    assert rec.status == "failed" and "exited with code 3" in rec.meta["error"]
    ok = await q.enqueue(jobs.async_add, 5, 5)  # the worker is still there
    assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 10


async def test_an_async_job_on_the_known_async_path_still_times_out_fails_and_cancels(broker, start_worker):
    w = await start_worker(concurrency=2)
    q = Queue(broker)
    learn = await q.enqueue(jobs.async_sleep_for, 0)  # a job process names the function async once
    assert (await wait_for_result(broker, learn.job_id, 30)).unwrap() == 0
    assert w.execution.async_names == {"jobs.async_sleep_for"}  # the next ones skip the job process
    slow = await q.configure(timeout=0.5).enqueue(jobs.async_sleep_for, 30)
    rec = await wait_for_result(broker, slow.job_id, 30)
    assert rec.status == "failed" and "JobTimeoutError" in rec.meta["error"]
    bad = await q.enqueue(jobs.async_sleep_for, "not a number")
    rec = await wait_for_result(broker, bad.job_id, 30)
    assert rec.status == "failed" and "TypeError" in rec.meta["error"]
    running = await q.enqueue(jobs.async_sleep_for, 30)
    await _until(lambda: asyncio.sleep(0, running.job_id in w.running), what="job running")
    assert await cancel_job(broker, running.job_id)
    assert (await wait_for_result(broker, running.job_id, 30)).status == "cancelled"


async def test_jobs_one_at_a_time_reuse_the_job_process_that_finished_last(broker, start_worker):
    # The warm child (last in, first out): one job after another all run in one job process,
    # where children taking turns would spread them over all three.
    w = await start_worker(concurrency=3)
    assert len(w.execution.pool.pids) == 3
    q = Queue(broker)
    pids = set()
    for _ in range(6):
        job = await q.enqueue(jobs.slow_pid, 0)
        pids.add((await wait_for_result(broker, job.job_id, 30)).unwrap())
    assert len(pids) == 1 and pids <= set(w.execution.pool.pids)


@pytest.mark.parametrize("execution", ["processes", "threads"])
async def test_an_async_job_that_catches_its_cancel_fails_at_its_timeout_and_frees_its_slot(
        broker, start_worker, tmp_path, caplog, execution):
    """It caught the CancelledError of its timeout and went on: the job stayed running, holding its
    slot, until it ended by itself (never, for a job that never ends). It is now failed at its
    timeout plus a short grace and left behind; its late return is dropped."""
    await start_worker(concurrency=1, execution=execution)
    q = Queue(broker)
    release = tmp_path / "release"
    stubborn = await q.configure(timeout=1).enqueue(jobs.catch_cancels_until_file, str(release))
    try:
        with caplog.at_level(logging.WARNING, logger="naq_nb"):
            rec = await wait_for_result(broker, stubborn.job_id, 10)
        assert rec.status == "failed" and "timed out after 1s" in rec.meta["error"], rec.meta
        assert any(stubborn.job_id in r.getMessage() and "left" in r.getMessage() for r in caplog.records)
        nxt = await q.enqueue(jobs.add, 2, 3)
        assert (await wait_for_result(broker, nxt.job_id, 10)).unwrap() == 5, "the only slot takes the next job"
    finally:
        release.write_text("go")
    ended = tmp_path / "release.ended"
    await _until(lambda: asyncio.sleep(0, ended.exists()), what="the job left behind ended")
    # Its late return wrote nothing: the timeout's failure stands.
    assert (await get_status(broker, stubborn.job_id))["status"] == "failed"
    assert (await get_result(broker, stubborn.job_id)).status == "failed"


async def test_cancelling_an_async_job_that_catches_its_cancel_frees_its_slot(broker, start_worker, tmp_path):
    """With no timeout, the cancel notice's CancelledError was caught and the slot waited for the job
    to end by itself: the deadline and a cancel now leave such a job behind the same way."""
    w = await start_worker(concurrency=1, execution="threads")
    q = Queue(broker)
    release = tmp_path / "release"
    stubborn = await q.enqueue(jobs.catch_cancels_until_file, str(release))
    try:
        await _until(lambda: asyncio.sleep(0, stubborn.job_id in w.running), what="job running")
        assert await cancel_job(broker, stubborn.job_id)
        nxt = await q.enqueue(jobs.add, 2, 3)
        assert (await wait_for_result(broker, nxt.job_id, 10)).unwrap() == 5, "the only slot takes the next job"
    finally:
        release.write_text("go")
    assert (await get_status(broker, stubborn.job_id))["status"] == "cancelled"



async def test_naq_worker_exits_on_sigterm_with_an_async_job_left_behind(broker, nats_server, tmp_path):
    """A `naq worker` that had left behind an async job catching its cancel stopped on SIGTERM but
    never exited: asyncio.run's shutdown cancelled the task again and waited for it for ever."""
    import signal
    release = tmp_path / "release"
    proc = worker_process(nats_server.url, "-c", "1")
    try:
        stubborn = await Queue(broker).configure(timeout=1).enqueue(jobs.catch_cancels_until_file, str(release))
        assert (await wait_for_result(broker, stubborn.job_id, 60)).status == "failed"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert b"leaving 1 async job(s) behind" in out, out
    finally:
        release.write_text("go")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_a_thread_past_its_jobs_timeout_keeps_its_slot_and_the_next_job_waits_queued(
        broker, start_worker, tmp_path):
    """The next job was taken at once, recorded running, and failed with JobTimeoutError after its own
    timeout although it never ran: it waited for the thread pool's only thread, still held."""
    await start_worker(concurrency=1, execution="threads")
    q = Queue(broker).configure(timeout=1)
    release = tmp_path / "release"
    stuck = await q.enqueue(jobs.wait_for_file, str(release))
    try:
        rec = await wait_for_result(broker, stuck.job_id, 10)
        assert rec.status == "failed" and "timed out after 1s" in rec.meta["error"], rec.meta
        nxt = await q.enqueue(jobs.add, 1, 2)
        # Twice its own timeout: had it been started, it would have ended (failed) by now.
        with pytest.raises(JobNotFinishedError):
            await wait_for_result(broker, nxt.job_id, 2)
        st = await get_status(broker, nxt.job_id)
        assert st["status"] == "queued" and not st.get("started_at"), st
    finally:
        released = time.time()
        release.write_text("go")
    rec = await wait_for_result(broker, nxt.job_id, 10)
    assert rec.unwrap() == 3, rec.meta
    assert (await get_status(broker, nxt.job_id))["started_at"] >= released
