"""Requeue of a failed job: one requeue per failure, never one that undoes the run it started."""

from __future__ import annotations

import asyncio

import pytest

from naq_nb.core import failed
from naq_nb.core.errors import ConcurrentUpdateError
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result, wait_for_result

import jobs


async def _failed_job(broker, start_worker, tmp_path):
    """A job that failed once (out of retries) and succeeds when run again; the worker that ran it."""
    w = await start_worker()
    job = await Queue(broker).configure(max_retries=0).enqueue(jobs.fail_until, str(tmp_path / "runs"), 2)
    assert (await wait_for_result(broker, job.job_id, 15)).status == "failed"
    return job, w


async def test_a_stale_requeue_does_not_undo_the_run_another_requeue_started(
    broker, start_worker, tmp_path, monkeypatch
):
    # Two requeues of one failure that both found its entry: the first one's run succeeded, then the
    # second purged that result and set the status back to "queued" for good (its message was dropped
    # as the first one's copy): the job's success was lost and it read "queued" for ever.
    job, _ = await _failed_job(broker, start_worker, tmp_path)
    found, go = asyncio.Event(), asyncio.Event()
    find = failed._find

    async def paused_find(b, ref, *finder):
        raw = await find(b, ref, *finder)
        if not found.is_set():
            found.set()
            await go.wait()
        return raw

    monkeypatch.setattr(failed, "_find", paused_find)
    late = asyncio.ensure_future(requeue_failed(broker, job.job_id))
    await asyncio.wait_for(found.wait(), 15)
    assert await requeue_failed(broker, job.job_id) == job.job_id
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 2
    go.set()
    with pytest.raises(ConcurrentUpdateError, match=f"job {job.job_id} is succeeded now, not failed"):
        await asyncio.wait_for(late, 15)
    assert (await get_result(broker, job.job_id)).unwrap() == 2
    assert (await get_status(broker, job.job_id))["status"] == "succeeded"


async def test_concurrent_requeues_of_one_failure_requeue_it_once_and_say_so(broker, start_worker, tmp_path):
    job, w = await _failed_job(broker, start_worker, tmp_path)
    await w.stop()  # the requeued job stays queued
    got = await asyncio.gather(*(requeue_failed(broker, job.job_id) for _ in range(4)), return_exceptions=True)
    # One claims the failure; one that reads the claim before the entry is deleted takes it for an
    # interrupted requeue of the same entry and redoes it (same message id: deduplicated). Either way
    # the job is queued once, and the others raise.
    assert got.count(job.job_id) >= 1, got
    for exc in (g for g in got if g != job.job_id):  # a bare ServerError from the entry's delete before
        assert isinstance(exc, (ConcurrentUpdateError, failed.JobNotFoundError)) and job.job_id in str(exc), exc
    assert await Queue(broker).count() == 1 and await list_failed(broker) == []
    st = await get_status(broker, job.job_id)
    assert st["status"] == "queued" and isinstance(st["requeued_from"], int)


async def test_requeue_all_skips_an_out_of_date_entry_and_requeues_the_rest(broker, nats_server, start_worker):
    # An entry whose job is no longer failed (it ran again since: at-least-once) is refused; `--all`
    # stopped at it, so one such entry kept every later failed job from being requeued.
    import json
    import os
    import subprocess
    import sys

    from helpers import ROOT

    w = await start_worker()
    q = Queue(broker).configure(max_retries=0)
    a, b = [await q.enqueue(jobs.boom, name) for name in ("a", "b")]
    for job in (a, b):
        assert (await wait_for_result(broker, job.job_id, 15)).status == "failed"
    await w.stop()  # requeued jobs stay queued
    st = await get_status(broker, a.job_id)
    await (await broker.kv(broker.layout.status_bucket)).put(
        a.job_id, json.dumps({**st, "status": "succeeded"}).encode()
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "NAQ_NATS_URL": nats_server.url}
    out = subprocess.run(
        [sys.executable, "-m", "naq_nb.cli.main", "failed", "requeue", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == ["requeued", b.job_id], out.stdout + out.stderr
    assert out.returncode == 1 and f"job {a.job_id} is succeeded now, not failed" in out.stderr
    assert [e["job_id"] for e in await list_failed(broker)] == [a.job_id]
    assert await Queue(broker).count() == 1


class _Killed(Exception):
    """Stands for the requeuing process dying between its publish and the entry's delete."""


def _delete_fails_once(broker, monkeypatch):
    delete, calls = broker.js.delete_msg, []

    async def delete_msg(*args, **kw):
        calls.append(args)
        if len(calls) == 1:
            raise _Killed()
        return await delete(*args, **kw)

    monkeypatch.setattr(broker.js, "delete_msg", delete_msg)


async def test_a_second_requeue_of_an_entry_left_by_a_cut_short_one_runs_the_job(
    broker, start_worker, tmp_path, monkeypatch
):
    # The first requeue published but never deleted its entry; the job ran and failed again. A second
    # requeue of that old entry published with the first one's message id, was dropped as its copy
    # within the de-duplication window, and left the job "queued" with no message: never run again.
    runs = tmp_path / "runs"
    await start_worker()
    job = await Queue(broker).configure(max_retries=0).enqueue(jobs.fail_until, str(runs), 3)
    assert (await wait_for_result(broker, job.job_id, 15)).status == "failed"
    [old] = await list_failed(broker)
    _delete_fails_once(broker, monkeypatch)
    with pytest.raises(_Killed):
        await requeue_failed(broker, old["seq"])
    assert (await wait_for_result(broker, job.job_id, 15)).status == "failed"  # run 2 fails too
    assert [e["seq"] for e in await list_failed(broker)][0] == old["seq"]  # the old entry is still there
    assert await requeue_failed(broker, old["seq"]) == job.job_id
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 3
    assert len(runs.read_text().splitlines()) == 3


async def test_a_requeue_cut_short_after_its_publish_and_done_again_runs_the_job_once(
    broker, start_worker, tmp_path, monkeypatch
):
    # Done again, the requeue publishes the same message as the first time, so the server keeps one.
    runs = tmp_path / "runs"
    job, w = await _failed_job(broker, start_worker, tmp_path)
    await w.stop()  # the requeued job stays queued until the redo is done
    [old] = await list_failed(broker)
    _delete_fails_once(broker, monkeypatch)
    with pytest.raises(_Killed):
        await requeue_failed(broker, job.job_id)
    assert await Queue(broker).count() == 1
    assert await requeue_failed(broker, job.job_id) == job.job_id
    assert await Queue(broker).count() == 1 and await list_failed(broker) == []
    assert (await get_status(broker, job.job_id))["requeued_from"] == old["seq"]
    await start_worker()
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 2
    assert len(runs.read_text().splitlines()) == 2
    assert await Queue(broker).count() == 0
