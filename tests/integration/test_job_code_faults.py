"""Job code that breaks the worker's own steps, not just itself: a fork whose copy comes back, an
exception whose str() raises, a result whose pickling raises SystemExit, a plain function returning
a coroutine. Each must end the job in a clear state, and the slot must go on answering right."""

import pytest

from naq_nb import Queue as NaqQueue
from naq_nb.client.client import Client
from naq_nb.core import runner as runner_mod
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

import jobs
from helpers import eventually

MODES = pytest.mark.parametrize("execution", ["processes", "threads"])


@MODES
@pytest.mark.parametrize("copy_exits", [True, False], ids=["copy-exits", "copy-returns"])
async def test_a_job_whose_fork_comes_back_answers_once_and_later_jobs_get_their_own_values(
        broker, start_worker, tmp_path, execution, copy_exits):
    """The forked copy came back into the job process's loop and answered on its pipe too: the job
    failed with the copy's SystemExit, and every later job on that slot got the value before it."""
    await start_worker(concurrency=1, execution=execution)
    q = Queue(broker)
    copy_ran = tmp_path / "copy"
    forked = await q.enqueue(jobs.fork_and_return, str(copy_ran), copy_exits)
    assert (await wait_for_result(broker, forked.job_id, 30)).unwrap() == "parent-value"
    assert copy_ran.read_text() == "copy\n"
    later = [await q.enqueue(jobs.add, i, 0) for i in range(3)]
    assert [(await wait_for_result(broker, j.job_id, 30)).unwrap() for j in later] == [0, 1, 2]


@MODES
async def test_an_exception_whose_str_raises_fails_the_job_once_naming_it(broker, start_worker, tmp_path,
                                                                          execution):
    """It was reported as the job process dying, and in threads mode as a worker error: the job
    ran again and ended "lost" though no worker died."""
    await start_worker(concurrency=1, execution=execution)
    runs = tmp_path / "runs"
    bad = await Queue(broker).configure(max_retries=0).enqueue(jobs.raise_bad_str, str(runs))
    rec = await wait_for_result(broker, bad.job_id, 30)
    assert rec.status == "failed" and "BadStr: <its str() raised RuntimeError>" in rec.meta["error"], rec.meta
    assert runs.read_text() == "run\n", "run once"
    ok = await Queue(broker).enqueue(jobs.add, 1, 2)
    assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 3


async def test_a_result_whose_pickling_raises_system_exit_fails_as_unpicklable(broker, start_worker):
    await start_worker(concurrency=1)
    bad = await Queue(broker).configure(max_retries=0).enqueue(jobs.result_exits_when_pickled)
    rec = await wait_for_result(broker, bad.job_id, 30)
    assert rec.status == "failed" and "cannot pickle the result (ExitsWhenPickled)" in rec.meta["error"], rec.meta


@MODES
async def test_a_plain_function_returning_a_coroutine_gives_its_value(broker, start_worker, execution):
    await start_worker(concurrency=1, execution=execution)
    job = await Queue(broker).enqueue(jobs.returns_coroutine, 40)
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == 41


async def test_a_worker_error_after_a_run_is_not_counted_as_a_lost_run(broker, start_worker, monkeypatch):
    """The run was recorded running; the worker failed afterwards and handed the job back. Its next
    delivery read "running" and counted a lost run: with max_retries=0 the job ended "lost" after
    two runs, and the worker-error limit was never reached."""
    async def broken(self, d, value):
        raise RuntimeError("a bug after the run")

    monkeypatch.setattr(runner_mod, "WORKER_ERROR_TRIES", 3)
    monkeypatch.setattr(runner_mod.JobRunner, "_finish_ok", broken)
    await start_worker(concurrency=1, execution="threads")
    job = await Queue(broker).configure(max_retries=0).enqueue(jobs.add, 1, 2)

    async def failed():
        rec = await get_status(broker, job.job_id)
        return rec if rec.get("status") == "failed" else None

    rec = await eventually(failed, timeout=30, what="the job failed")
    assert "the worker failed handling it 3 times" in rec["error"] and "a bug after the run" in rec["error"], rec
    assert rec.get("lost", 0) == 0


@MODES
async def test_long_lines_and_messages_are_cut_and_the_job_succeeds(broker, start_worker, execution):
    """A line or a progress message over the server's max payload went into the final status
    record, whose write then failed on every try: the job ran 22 times and ended "lost"."""
    await start_worker(concurrency=1, execution=execution)
    job = await Queue(broker).enqueue(jobs.long_output, 1_100_000, 1_100_000)
    assert (await wait_for_result(broker, job.job_id, 60)).unwrap() == 1_100_000
    st = await get_status(broker, job.job_id)
    assert st["status"] == "succeeded" and st["attempts"] == 1
    logs = st["logs"]
    assert logs[0] == "x" * 1960 + "... (1,098,040 more characters)"
    assert logs[1].startswith(" 1999 of 2000 #") and len(logs[1]) < 100, "a bar redrawn in place: its last state"
    assert logs[2] == "the end", "the last line, printed without a newline, is logged too"
    assert st["message"] == "m" * 1960 + "... (1,098,040 more characters)"


@MODES
async def test_a_retry_does_not_inherit_the_unfinished_line_of_the_attempt_before(broker, start_worker, tmp_path,
                                                                               execution):
    await start_worker(concurrency=1, execution=execution)
    job = await Queue(broker).configure(max_retries=1, retry_delay=0).enqueue(
        jobs.fail_first_with_partial_line, str(tmp_path / "runs"))
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == "ok"
    assert (await get_status(broker, job.job_id))["logs"] == ["attempt 2 line"]


async def test_a_thread_an_earlier_job_left_running_does_not_write_into_the_next_jobs_log(broker, start_worker):
    await start_worker(concurrency=1)  # one job process: the next job runs beside the leftover thread
    q = Queue(broker)
    left = await q.enqueue(jobs.leave_a_chatty_thread, 3.0)
    assert (await wait_for_result(broker, left.job_id, 30)).unwrap() == "left"
    job = await q.enqueue(jobs.print_with_a_thread_of_its_own, 0.5)
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == "own"
    assert (await get_status(broker, job.job_id))["logs"] == ["from a thread of this job", "own line"]


async def test_a_worker_error_after_the_final_records_were_sent_leaves_them_standing(broker, start_worker, settings,
                                                                                      monkeypatch):
    """Recording the worker error as "retrying" is for a run that has no outcome out yet; written
    after the final records, it would overwrite a succeeded job's status."""
    from naq_nb.core import final_writes

    calls = []
    real_early, real_push = final_writes.push_early, runner_mod.push_result

    def broken_once(real):
        async def push(*args, **kwargs):
            calls.append(real.__name__)
            if len(calls) == 1:
                raise RuntimeError("a bug in the push")
            return await real(*args, **kwargs)
        return push

    monkeypatch.setattr(final_writes, "push_early", broken_once(real_early))
    monkeypatch.setattr(runner_mod, "push_result", broken_once(real_push))
    written = []  # statuses the worker wrote without waiting (a redelivery repairs the record later)
    real_nowait = runner_mod.JobRunner._status_nowait

    async def status_nowait(self, job_id, rec):
        written.append(rec["status"])
        await real_nowait(self, job_id, rec)

    monkeypatch.setattr(runner_mod.JobRunner, "_status_nowait", status_nowait)
    await start_worker(concurrency=1)
    client = Client(settings=settings)  # a client's job: its result is pushed to it
    try:
        job = await NaqQueue("default", client=client).enqueue(jobs.add, 1, 2)
        assert await client.result(job.job_id, 30) == 3
    finally:
        await client.close()

    async def settled():  # the redelivery found the result and acked the message
        return (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages == 0

    await eventually(settled, timeout=30, what="the job's message acked")
    assert calls[0] == "push_early", calls  # the error came after the final records were sent
    assert "retrying" not in written, written
    assert (await get_status(broker, job.job_id))["status"] == "succeeded"


async def test_a_worker_error_after_many_retries_backs_off_instead_of_failing_at_once(
    broker, start_worker, monkeypatch, tmp_path
):
    """The worker-error limit counted every delivery, retries of the job's own failures too: a job
    meeting one worker error on its fifth run or later failed at once, with retries left."""
    real = runner_mod.JobRunner._finish_ok
    broken_once = []

    async def broken_after_retries(self, d, value):
        if d.delivered == 6 and not broken_once:
            broken_once.append(d.delivered)
            raise RuntimeError("a bug after the sixth run")
        return await real(self, d, value)

    monkeypatch.setattr(runner_mod, "WORKER_ERROR_TRIES", 3)
    monkeypatch.setattr(runner_mod.JobRunner, "_finish_ok", broken_after_retries)
    await start_worker(concurrency=1, execution="threads")
    q = Queue(broker).configure(max_retries=10, retry_delay=0.01)
    job = await q.enqueue(jobs.fail_until, str(tmp_path / "runs"), 6)  # fails five times, then returns
    rec = await wait_for_result(broker, job.job_id, 60)
    assert broken_once == [6], "the worker error happened on the sixth delivery"
    assert rec.status == "succeeded", rec.meta.get("error")


async def test_a_long_progress_message_on_a_small_max_payload_server_still_ends_the_job(
    settings, start_worker, tmp_path
):
    """The message was cut at a fixed 1,960 characters, not by the server's max_payload: on a 2 KiB
    server the final status record never fit, and the job was handed back and run again for ever."""
    from naq_nb.core.broker import Broker
    from naq_nb.core.server import EmbeddedServer
    from naq_nb.core.queue import get_status

    with EmbeddedServer(store_dir=tmp_path / "js", max_payload=2048) as srv:
        small = settings.with_(nats_url=srv.url)
        await start_worker(settings=small, concurrency=1)
        b = await Broker.connect(settings=small)
        try:
            job = await Queue(b).enqueue(jobs.long_output, 10, 10_000)
            assert (await wait_for_result(b, job.job_id, 30)).unwrap() == 10
            status = await get_status(b, job.job_id)
            assert status["status"] == "succeeded" and status["attempts"] == 1
            assert status["message"].startswith("mmm") and status["message"].endswith("...")
        finally:
            await b.close()


async def test_a_long_failure_on_a_tiny_max_payload_server_leaves_the_worker_working(
    settings, start_worker, tmp_path
):
    """The failed-stream copy's headers were not counted against max_payload: on a 1,500-byte server
    the copy of a job failing with a long message was over it, the server closed the worker's
    connection, and the worker sat alive and idle for good."""
    from naq_nb.core.broker import Broker
    from naq_nb.core.server import EmbeddedServer

    with EmbeddedServer(store_dir=tmp_path / "js", max_payload=1500) as srv:
        small = settings.with_(nats_url=srv.url)
        await start_worker(settings=small, concurrency=1)
        b = await Broker.connect(settings=small)
        try:
            q = Queue(b).configure(max_retries=0)
            bad = await q.enqueue(jobs.boom, "e" * 10_000)
            with pytest.raises(ValueError, match="eeee"):
                (await wait_for_result(b, bad.job_id, 30)).unwrap()
            nxt = await q.enqueue(jobs.add, 1, 2)
            assert (await wait_for_result(b, nxt.job_id, 30)).unwrap() == 3, "the worker still takes jobs"
            copies = await b.js.stream_info(b.layout.failed_stream)
            assert copies.state.messages == 1, "the failure was copied to the failed stream"
        finally:
            await b.close()
