"""What a job leaves behind must not reach the next job, nor hold the worker: a job process is
reused, so its working directory, sys.path, environment, umask, alarm and streams are put back
before each job; a thread a job leaves running does not keep `naq worker` from exiting."""

import signal
import subprocess

from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

import jobs
from helpers import worker_process


async def test_a_job_process_gives_the_next_job_the_workers_state_not_the_last_jobs(broker, start_worker,
                                                                                     tmp_path):
    """The next job on the slot ran in the directory, sys.path, environment and umask the last one
    left, under its alarm, and with sys.stdout = 42 its print failed: an innocent job failed."""
    await start_worker(concurrency=1)  # one job process: every job below runs in the same one
    q = Queue(broker)

    async def run(fn, *args):
        job = await q.configure(max_retries=0).enqueue(fn, *args)
        rec = await wait_for_result(broker, job.job_id, 30)
        assert rec.status == "succeeded", rec.meta
        return job, rec.unwrap()

    _, before = await run(jobs.report_process_state)
    assert before["alarm"] == 0 and before["env"] is None
    assert (await run(jobs.change_process_state, str(tmp_path)))[1] == "changed"
    job, after = await run(jobs.report_process_state)
    assert after == before
    assert (await get_status(broker, job.job_id))["logs"] == ["printed"]


async def test_a_thread_a_job_leaves_running_does_not_keep_naq_worker_from_exiting(nats_server, broker,
                                                                                    tmp_path):
    """In threads mode the job's non-daemon thread was the worker's: after SIGTERM the worker
    stopped, then the interpreter waited for that thread at exit, for ever."""
    proc = worker_process(nats_server.url, "default", "--execution", "threads")
    try:
        job = await Queue(broker).enqueue(jobs.leave_a_non_daemon_thread, str(tmp_path / "never"))
        assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == "left"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("naq worker still running 30 s after SIGTERM") from None
        out = proc.stdout.read().decode()
        assert code == 0, out
        assert "leaving 1 thread(s) a job started" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        (tmp_path / "never").touch()
