"""At-least-once delivery: a worker SIGKILLed mid-job loses nothing; results are written once."""

import asyncio
import json
import signal

from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result

import jobs
from helpers import eventually, worker_process


async def _wait_lines(path, n, timeout=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if path.exists() and len(path.read_text().split()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


async def test_sigkilled_worker_loses_no_job(broker, nats_server, start_worker, tmp_path):
    runs = tmp_path / "runs"
    env = {"NAQ_ACK_WAIT": "2"}
    victim = worker_process(nats_server.url, "-c", "4", env=env)
    try:
        q = Queue(broker)
        jobs_ = [await q.enqueue(jobs.mark, str(runs), f"job{i}", 1.0) for i in range(8)]
        await _wait_lines(runs, 2)  # the victim is mid-job
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    await start_worker(concurrency=8)
    results = [await wait_for_result(broker, j.job_id, 30) for j in jobs_]
    assert sorted(r.unwrap() for r in results) == sorted(f"job{i}" for i in range(8))
    executed = runs.read_text().split()
    assert set(executed) == {f"job{i}" for i in range(8)}
    assert len(executed) > 8, "some job was interrupted and ran again"
    info = await broker.js.stream_info(f"KV_{broker.layout.results_bucket}")
    assert info.state.last_seq == 8, "exactly one result write per job, despite the re-runs"


async def test_a_paused_worker_runs_its_job_once_and_counts_no_lost_run(broker, nats_server, tmp_path):
    # SIGSTOP longer than the ack wait (a VM pause, a swap storm): the server redelivers the job to the
    # same worker, which must not start it in a free slot beside the run in hand, nor count a lost run.
    runs = tmp_path / "runs"
    w = worker_process(nats_server.url, "-c", "3", env={"NAQ_ACK_WAIT": "2"})
    try:
        job = await Queue(broker).enqueue(jobs.mark, str(runs), "once", 8.0)
        await _wait_lines(runs, 1)  # started ("mark" writes its token when it starts)
        for _ in range(2):  # two pauses: each one past the ack wait, so two redeliveries
            w.send_signal(signal.SIGSTOP)
            await asyncio.sleep(3.0)  # (the pause itself is the fault injected, not a wait for a result)
            w.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.5)
        rec = await wait_for_result(broker, job.job_id, 30)
        assert rec.unwrap() == "once"
        assert runs.read_text().split() == ["once"], "the job ran once"
        status = await get_status(broker, job.job_id)
        assert status["status"] == "succeeded" and status.get("lost", 0) == 0 and status["attempts"] == 1
    finally:
        w.send_signal(signal.SIGCONT)
        w.kill()
        w.wait(10)
    log = w.stdout.read().decode()
    # Its watchdog tells the pause for what it was, and does not blame blocking code in a job.
    assert "worker process was paused for" in log, log
    assert "event loop blocked" not in log, log


async def test_when_an_earlier_result_stands_the_status_tells_its_run(broker, start_worker):
    # Two runs of one job (a worker thought dead came back): the result written first stands, and the
    # status record must describe that run (worker, attempts, end), not the run whose result was refused.
    from naq_nb.core.records import encode_result
    from naq_nb.core.serialization import get_serializer
    job = await Queue(broker).enqueue(jobs.add, 1, 2)
    earlier = encode_result(get_serializer("pickle"), 99, result_ttl=None, worker="wA-gone", attempts=1,
                            started_at=1.5)
    await (await broker.kv(broker.layout.results_bucket)).create(job.job_id, earlier)
    finished = json.loads(earlier.partition(b"\n")[0])["finished_at"]
    await start_worker()

    async def settled():
        # (our run's own "succeeded" is written beside its refused result, and corrected just after)
        s = await get_status(broker, job.job_id)
        return s if s["status"] == "succeeded" and s.get("worker") == "wA-gone" else None
    status = await eventually(settled, 30, "the status to tell the run whose result stands")
    assert (status["attempts"], status["finished_at"]) == (1, finished)
    assert status["started_at"] == 1.5 and not status.get("traceback")  # that run's times, not a mix
    assert (await wait_for_result(broker, job.job_id, 5)).unwrap() == 99


async def test_a_keyed_jobs_queued_record_never_overwrites_a_later_one(broker):
    # A keyed job's queued record is written after its message is stored; a worker may have written
    # "running" (or its end) by then, which must stand.
    from naq_nb.core.job import JobOptions
    kv = await broker.kv(broker.layout.status_bucket)
    await kv.put("keyed-1", json.dumps({"id": "keyed-1", "queue": "nobody", "status": "running"}).encode())
    q = Queue(broker, "nobody")
    await q.enqueue_job(q.make_job(jobs.add, (1, 2), {}, JobOptions(key="keyed-1")))
    assert (await get_status(broker, "keyed-1"))["status"] == "running"
