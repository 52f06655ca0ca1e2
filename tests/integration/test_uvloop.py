"""naq_nb on uvloop (a script or app that runs its loop there): a worker's job processes start, run,
crash and time out as they do on asyncio's own loop and it stops cleanly; a broker closes cleanly
after its server is killed."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest
import uvloop  # a test dependency: this file must run, not skip, in CI

from naq_nb.core.broker import Broker
from naq_nb.core.errors import JobTimeoutError
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs
from helpers import ROOT, eventually, pid_gone

_SCRIPT = """
import asyncio, sys, uvloop
from naq_nb.core.worker import Worker

async def main():
    print("loop:", type(asyncio.get_running_loop()).__module__, flush=True)
    w = Worker(concurrency=2, execution="processes")
    w.install_signal_handlers()
    await w.run()

uvloop.run(main())
"""


async def test_a_worker_on_uvloop_runs_crashes_and_times_out_its_job_processes(broker, nats_server, tmp_path):
    env = {**os.environ, "NAQ_NATS_URL": nats_server.url, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "loop: uvloop", "the worker runs on uvloop"
        q = Queue(broker)
        ok = await q.enqueue(jobs.add, 1, 2)
        crash = await q.enqueue(jobs.segfault)
        hung = await q.configure(timeout=2).enqueue(jobs.hang, str(tmp_path / "pid"))
        assert (await wait_for_result(broker, ok.job_id, 30)).unwrap() == 3
        rec = await wait_for_result(broker, crash.job_id, 30)
        assert rec.status == "failed" and "worker process died: signal 11 (SIGSEGV)" in rec.meta["error"]
        with pytest.raises(JobTimeoutError):
            (await wait_for_result(broker, hung.job_id, 30)).unwrap()
        hung_pid = int((tmp_path / "pid").read_text().split()[0])
        await eventually(lambda: asyncio.sleep(0, pid_gone(hung_pid)), what="the hung job's process killed")
        again = [await q.enqueue(jobs.add, i, i) for i in range(4)]
        assert [(await wait_for_result(broker, j.job_id, 30)).unwrap() for j in again] == [0, 2, 4, 6]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "cannot start a job process" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_broker_on_uvloop_closes_cleanly_after_its_server_is_killed(own_nats_server, settings):
    """nats-py's close writes what it still holds into the lost socket; uvloop's transport raises there
    (asyncio's ignores it), which stopped the close half-way with a RuntimeError."""

    async def scenario() -> bool:
        assert type(asyncio.get_running_loop()).__module__ == "uvloop"
        b = await Broker.connect(settings=settings)
        await b.ensure_layout()
        own_nats_server.kill()
        await eventually(lambda: asyncio.sleep(0, not b.is_connected), what="the connection lost")
        for i in range(20):  # held by nats-py while it tries to reconnect
            await b.send(f"naq.probe.{i}", b"x" * 100)
        assert b.nc._pending_data_size > 0, "the scenario needs bytes left to send at close"
        await b.close()
        return b.nc.is_closed

    assert uvloop.run(scenario())
