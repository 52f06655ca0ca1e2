"""At-least-once delivery: a worker SIGKILLed mid-job loses nothing; results are written once."""

import asyncio
import signal

from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs
from helpers import worker_process


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
