"""Issue 11 row 10: errors say what is wrong and what to do; tracebacks show the user's own lines."""

from __future__ import annotations

import linecache
import traceback

import pytest

import naq_nb as nq

import jobs


def test_timeout_on_a_queue_nobody_serves_says_so(nb_client):
    fut = nq.options(queue="nobody").submit(jobs.add, 1, 2)
    with pytest.raises(TimeoutError, match=r"did not finish within 0.3s; it is queued and NO worker serves "
                                           r"queue 'nobody'.*nq.local\(queues=\['nobody'\]\).*naq worker nobody"):
        fut.result(timeout=0.3)
    fut.cancel()


def test_timeout_of_a_job_this_server_has_no_record_of_says_so(nb_client):
    fut = nq.JobFuture.attach("f" * 32)  # attach checks nothing: a wrong id, or one from a store now gone
    with pytest.raises(TimeoutError, match=r"it is unknown: this server has no record of it .*nq.job\(id\)"):
        fut.result(timeout=0.3)


def test_timeout_while_running_says_it_keeps_running(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.sleep_for, 3.0)
    with pytest.raises(TimeoutError, match="did not finish within 0.2s"):
        fut.result(timeout=0.2)
    assert fut.result(timeout=30) == 3.0


def test_job_errors_carry_no_concurrent_futures_frames(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.boom, "plain")
    with pytest.raises(ValueError) as info:
        fut.result(timeout=30)
    files = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert not any("concurrent" in f for f in files), files


def test_remote_traceback_shows_the_notebook_lines(nb_client, thread_worker):
    thread_worker()
    src = "def boom_here(x):\n    y = x + 1\n    raise ValueError(f'bad {y}')\n"
    fname = "/tmp/ipykernel_0000/fake_cell.py"  # what a notebook cell's code is called
    linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)
    ns: dict = {"__name__": "__naq_test_cell__"}  # not importable: cloudpickle sends it by value
    exec(compile(src, fname, "exec"), ns)
    fut = nq.submit(ns["boom_here"], 1)
    with pytest.raises(ValueError, match="bad 2") as info:
        fut.result(timeout=30)
    tb = info.value.remote_traceback
    assert "<dynamic-code>" not in tb, tb
    assert f'File "{fname}", line 3, in boom_here' in tb and "raise ValueError(f'bad {y}')" in tb
    assert any("raise ValueError(f'bad {y}')" in n for n in info.value.__notes__)


def test_no_server_error_points_a_notebook_at_local():
    with pytest.raises(nq.NaqConnectionError, match=r"in a notebook, nq.local\(\) starts one"):
        nq.get_client("nats://127.0.0.1:1").workers_sync()
