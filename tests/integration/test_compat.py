"""naq's API through naq_nb: sync helpers in scripts, inside running loops, from threads."""

import asyncio
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import naq_nb
from naq_nb import (JobNotFinishedError, JobNotFoundError, Queue, close_sync_connections, enqueue,
                    enqueue_sync, fetch_job_result, fetch_job_result_sync, list_workers_sync, purge_queue_sync)

import jobs
from helpers import ROOT


@pytest.fixture
def naq_env(nats_server, monkeypatch):
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    yield nats_server.url
    close_sync_connections()


@pytest.fixture
def thread_worker(naq_env):
    w = naq_nb.Worker("default", concurrency=4)
    t = threading.Thread(target=lambda: asyncio.run(w.run()), daemon=True)
    t.start()
    yield w
    w.request_stop()
    t.join(15)


def test_naq_readme_example_runs_unchanged(naq_env, tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        from naq_nb import enqueue_sync, fetch_job_result_sync
        from jobs import count_words
        job = enqueue_sync(count_words, "This is a sample text with several words.")
        print(f"Job {job.job_id} enqueued.")
        print("result", fetch_job_result_sync(job.job_id, timeout=30))
        job2 = enqueue_sync(count_words, "second call in the same script")
        print("result", fetch_job_result_sync(job2, timeout=30))
    """))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    worker = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "worker", "default"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    finally:
        worker.terminate()
        worker.wait(20)
    assert out.returncode == 0, out.stderr
    assert "result 8" in out.stdout and "result 6" in out.stdout
    assert worker.returncode == 0, "SIGTERM stops the worker gracefully"


def test_sync_calls_inside_a_running_loop(thread_worker):
    async def cell():
        job = enqueue_sync(jobs.add, 2, 3)          # as in a Jupyter cell: a loop is running
        a = fetch_job_result_sync(job, timeout=10)
        j2 = await enqueue(jobs.add, 4, 4)
        b = await fetch_job_result(j2, timeout=10)
        return a, b
    assert asyncio.run(cell()) == (5, 8)


def test_sync_calls_from_many_threads_and_after_close(thread_worker):
    out: list[int] = []
    errors: list[BaseException] = []

    def call(i):
        try:
            out.append(fetch_job_result_sync(enqueue_sync(jobs.add, i, 100), timeout=10))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert not errors and sorted(out) == [100 + i for i in range(10)]
    close_sync_connections()
    assert fetch_job_result_sync(enqueue_sync(jobs.add, 1, 1), timeout=10) == 2


def test_naq_option_names_and_queue_class(thread_worker, tmp_path):
    q = Queue("default")
    job = q.enqueue_sync(jobs.fail_until, str(tmp_path / "c"), 2, max_retries=2, retry_delay=0.1)
    assert job.max_retries == 2 and job.retry_delay == 0.1
    assert fetch_job_result_sync(job, timeout=10) == 2
    other = q.configure(timeout=5).enqueue_sync(jobs.takes_reserved, 1, timeout=2)
    assert fetch_job_result_sync(other, timeout=10)["timeout"] == 2
    assert [w["queues"] for w in list_workers_sync()] == [["default"]]


def test_fetch_unfinished_and_unknown(naq_env):
    job = enqueue_sync(jobs.add, 1, 1, queue_name="nobody-serves-this")
    with pytest.raises(JobNotFinishedError):
        fetch_job_result_sync(job)
    with pytest.raises(JobNotFoundError):
        fetch_job_result_sync("does-not-exist")
    assert purge_queue_sync("nobody-serves-this") == 1
