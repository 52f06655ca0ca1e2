"""``nq.map``'s JobGroup, ``nq.gather`` / ``as_completed`` / ``wait``, and its one live display."""

from __future__ import annotations

import asyncio

import pytest

import naq_nb as nq
from naq_nb.client.group import JobGroup
from naq_nb.notebook.widgets import GroupDisplay

import jobs
from helpers import wait_until
from test_widgets import Recorder


def test_map_returns_a_group_with_aggregate_calls(nb_client, thread_worker):
    thread_worker(concurrency=4)
    g = nq.map(jobs.add, range(10), range(10))
    assert isinstance(g, JobGroup) and len(g) == 10 and g[3].job_id == g.job_ids[3]
    assert g.results(timeout=30) == [2 * i for i in range(10)]
    assert g.done() and g.counts() == {"succeeded": 10}
    assert repr(g) == "<JobGroup add (10 jobs): 10/10 succeeded>"
    assert g.label(3) == "3, 3"
    assert asyncio.run(_await(g)) == [2 * i for i in range(10)]


async def _await(g):
    return await g


def test_gather_as_completed_wait(nb_client, thread_worker, tmp_path):
    thread_worker(concurrency=4)
    gate = tmp_path / "gate"  # the first job ends only once the test has seen the other two end
    futs = [nq.submit(jobs.wait_for_file, str(gate)), nq.submit(jobs.sleep_for, 0.0), nq.submit(jobs.boom, "x")]
    done, pending = nq.wait(futs, timeout=30, return_when=nq.FIRST_COMPLETED)
    assert done and futs[0] in pending and len(done) + len(pending) == 3
    order = nq.as_completed(futs, timeout=30)
    assert {next(order), next(order)} == set(futs[1:])
    (tmp_path / "gate.tmp").write_text("go")
    (tmp_path / "gate.tmp").rename(gate)  # whole at once: the job reads as soon as the name exists
    assert next(order) is futs[0] and list(order) == []
    with pytest.raises(ValueError, match="x"):
        nq.gather(futs, timeout=30)
    out = nq.gather(futs, timeout=30, errors="return")
    assert out[1] == 0.0 and isinstance(out[2], ValueError)
    assert len(nq.gather(futs, errors="skip")) == 2

    async def main():
        seen = [f async for f in nq.as_completed_async(futs, timeout=30)]
        d, p = await nq.wait_async(futs, timeout=30)
        return seen, d, p, await nq.gather_async(futs, errors="return")
    seen, d, p, res = asyncio.run(main())
    assert set(seen) == set(futs) and len(d) == 3 and not p and res[0] == "go"


def test_gather_timeout_says_how_many_are_left(nb_client):
    g = nq.map(jobs.add, [1, 2], [3, 4])  # no worker serves the queue
    with pytest.raises(TimeoutError, match="2 of 2 jobs did not finish within 0.2s"):
        nq.gather(g, timeout=0.2)
    with pytest.raises(TimeoutError, match="2 of 2 jobs"):
        list(nq.as_completed(g, timeout=0.2))

    async def main():
        await nq.gather_async(g, timeout=0.2)
    with pytest.raises(TimeoutError, match="2 of 2 jobs"):
        asyncio.run(main())
    g.cancel()


@pytest.mark.parametrize("call, match", [
    (lambda: nq.gather(42), "needs JobFutures"),
    (lambda: nq.gather([1, 2]), "got a int"),
    (lambda: nq.gather([], timeout=-1), "timeout"),
    (lambda: nq.gather([], errors="ignore"), "errors must be one of"),
    (lambda: nq.wait([], return_when="SOMETIMES"), "return_when"),
    (lambda: list(nq.as_completed("abc")), "needs JobFutures"),
    (lambda: nq.wait([], timeout=float("nan")), r"wait\(timeout=...\) must be seconds >= 0 or None"),
    (lambda: nq.gather([], timeout="1"), r"gather\(timeout=...\)"),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_group_display_counts_throughput_and_final_state(nb_client, thread_worker):
    thread_worker(concurrency=4)
    rec = Recorder()
    g = nq.map(jobs.add, range(30), range(30))
    d = GroupDisplay(g, publish=rec).show()
    g.wait(30)
    wait_until(lambda: "30/30 succeeded" in rec.last["text/plain"], timeout=10)
    assert rec.last["text/plain"].startswith("naq map add (") and "jobs/" in rec.last["text/plain"]
    assert d.terminal() and "naq-done" in rec.last["text/html"]


def test_sweep_display_stacked_bar_and_compact_parameters(nb_client, thread_worker):
    thread_worker(concurrency=4)
    rec = Recorder()
    xs = [0.0, 1.0, 2.8421052631578947, 4.0]
    sw = nq.sweep(lambda x: x if x != 1.0 else 1 / 0, x=xs)
    GroupDisplay(sw, publish=rec).show()
    sw.wait(30)
    wait_until(lambda: "3/4 succeeded, 1 failed" in rec.last["text/plain"], timeout=10)
    html = rec.last["text/html"]
    # one segment per status: green for 3, red for 1 — not a solid red bar
    assert "title='3 succeeded'" in html and "width:75.00%" in html and "title='1 failed'" in html
    assert sw.label(2) == "x=2.842"
    assert "[1] x=1: failed" in rec.last["text/plain"]
    assert "<details>" in html and "1 failed: show 1" in html  # collapsed when done


def test_a_group_cancel_reads_the_queue_once_and_cancels_every_job_behind_a_backlog(
        nb_client, thread_worker, monkeypatch):
    # Jobs sent in fast batches have no sequence: each job's cancel alone looked for its message from
    # the queue's start, up to QUEUED_SCAN_LIMIT messages, so behind a longer backlog none was found,
    # and a worker started after the cancel ran them all. A group's cancel reads the queue once.
    from naq_nb.client.loop import run_sync
    from naq_nb.core import cancel as cancel_mod
    from naq_nb.core.queue import Queue, get_status

    monkeypatch.setattr(cancel_mod, "QUEUED_SCAN_LIMIT", 20)
    ahead = nq.map(jobs.add, range(50), range(50))  # the backlog: not cancelled
    g = nq.map(jobs.add, range(100), range(100))
    chosen = nq.options(job_id="chosen-in-group").map(jobs.add, [1], [1])
    parked = nq.options(depends_on=[g[7]]).submit(jobs.add, 1, 2)  # waits on a job of the group
    b = run_sync(nb_client.broker())
    assert g.cancel() == 100 and g.cancel() == 0
    assert chosen.cancel() == 1  # a chosen id is the caller's own job: cancelled too
    assert all(f.cancelled() for f in g) and g.counts() == {"cancelled": 100}
    assert run_sync(Queue(b, "default").count()) == 51, "the group's messages are deleted; the rest are kept"
    thread_worker(concurrency=4)
    assert ahead.results(timeout=60) == [2 * i for i in range(50)]
    with pytest.raises(Exception, match=g[7].job_id):  # what waited on a cancelled job fails, naming it
        parked.result(timeout=30)
    assert {run_sync(get_status(b, f.job_id))["status"] for f in [*g, *chosen]} == {"cancelled"}  # none ran


def test_a_group_cancel_from_a_running_loop(nb_client):
    g = nq.map(jobs.add, range(70), range(70))
    assert asyncio.run(g.cancel_async()) == 70 and g.counts() == {"cancelled": 70}
