"""Sweeps: grids, DataFrames, failures and retry, the result cache, attach after a restart, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import naq_nb as nq
from naq_nb.client.loop import run_sync
from naq_nb.core.errors import SerializationError
from naq_nb.notebook.sweep import Sweep, SweepNotFoundError, sweep_async

import jobs
from helpers import ROOT, wait_until


def train(lr, depth):
    return {"score": lr * depth, "depth": depth}


def flaky(x, flag):
    if x % 2 and not Path(flag).exists():
        raise ValueError(f"odd {x}")
    return x * 10


def published(client) -> int:
    """Jobs ever published on the jobs stream (its last sequence; acked jobs leave a work queue)."""
    async def seq():
        b = await client.broker()
        return (await b.js.stream_info(b.layout.jobs_stream)).state.last_seq
    return run_sync(seq())


def test_cartesian_points_and_dict_results_as_columns(nb_client, thread_worker):
    thread_worker(concurrency=4)
    sw = nq.sweep(train, lr=[1, 2], depth=range(3, 6))
    assert len(sw) == 6 and sw.points[:3] == [{"lr": 1, "depth": 3}, {"lr": 1, "depth": 4}, {"lr": 1, "depth": 5}]
    sw.wait(timeout=30)
    assert sw.done() and sw.summary() == "6/6 succeeded" and "6/6 succeeded" in repr(sw)
    df = sw.to_dataframe()
    # "depth" is both a parameter and a result key: the result's column gets a prefix
    assert list(df.columns) == ["lr", "depth", "score", "result.depth", "status", "duration", "attempts",
                                "error", "job_id"]
    assert df.score.tolist() == [3, 4, 5, 6, 8, 10] and df.lr.tolist() == [1, 1, 1, 2, 2, 2]
    assert set(df.status) == {"succeeded"} and df.error.isna().all() and (df.duration >= 0).all()
    assert df.job_id.tolist() == sw.job_ids


def test_no_value_is_dropped_when_column_names_clash(nb_client, thread_worker):
    """Parameters named like the job's own columns, a plain result beside a parameter called
    "result", and dict results whose keys share one str() or a prefixed name: each value keeps
    its own column."""
    thread_worker(concurrency=4)
    sw = nq.sweep(lambda status, error, result: status * 10, status=[1, 2], error=["a"], result=[None])
    sw.wait(timeout=30)
    df = sw.to_dataframe()
    assert list(df.columns) == ["status", "error", "result", "result.result", "job.status", "duration",
                                "attempts", "job.error", "job_id"]
    assert df.status.tolist() == [1, 2] and df.error.tolist() == ["a", "a"] and df.result.isna().all()
    assert df["result.result"].tolist() == [10, 20] and set(df["job.status"]) == {"succeeded"}
    keyed = nq.sweep(lambda i: {1: "int", "1": "str", "i": i, "result.i": "x"}, i=[7])
    keyed.wait(timeout=30)
    row = keyed.to_dataframe().iloc[0]
    assert [row["1"], row["result.1"], row["i"], row["result.i"], row["result.result.i"]] == ["int", "str", 7, 7, "x"]


def test_grid_points_failures_and_retry_failed(nb_client, thread_worker, tmp_path):
    thread_worker(concurrency=4)
    flag = str(tmp_path / "flag")
    sw = nq.sweep(flaky, grid=[{"x": i, "flag": flag} for i in range(5)], name="flaky run")
    sw.wait(timeout=30)
    assert sw.counts() == {"succeeded": 3, "failed": 2} and sw.name == "flaky run"
    df = sw.to_dataframe()
    assert df.status.tolist() == ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    assert df.result.tolist()[::2] == [0, 20, 40] and "ValueError: odd 1" in df.error[1]
    with pytest.raises(ValueError, match="odd 1"):
        sw.results()
    assert isinstance(sw.results(errors="return")[3], ValueError)

    before, old_ids, old_futs = published(nb_client), sw.job_ids, list(sw.futures)
    Path(flag).touch()
    assert sw.retry_failed() == 2
    assert [len(f._listeners) for f in old_futs] == [1, 0, 1, 0, 1]  # replaced points are let go
    assert published(nb_client) == before + 2  # only the failed points went again
    assert [a == b for a, b in zip(old_ids, sw.job_ids)] == [True, False, True, False, True]
    assert sw.results(timeout=30) == [0, 10, 20, 30, 40]
    assert sw.retry_failed() == 0
    assert Sweep.attach(sw.id).job_ids == sw.job_ids  # the stored record follows


def crashy(x):
    if x == 1:
        raise ValueError("bad point 1")
    if x == 2:
        os._exit(3)  # kills the job's process, never the worker
    if x == 3:
        time.sleep(120)  # past the timeout: its process is killed
    return {"y": x * 2}


def test_failing_crashing_and_hung_points_end_as_error_rows(nb_client, thread_worker):
    thread_worker(concurrency=2)  # sync job code in child processes (the default execution)
    sw = nq.sweep.options(timeout=3)(crashy, x=[0, 1, 2, 3, 4])
    df = sw.wait(timeout=60).to_dataframe()
    assert df.status.tolist() == ["succeeded", "failed", "failed", "failed", "succeeded"]
    assert df.y[0] == 0 and df.y[4] == 8 and df.y[1:4].isna().all()
    assert df.error[[0, 4]].isna().all()
    assert "ValueError: bad point 1" in df.error[1]
    assert "worker process died: exited with code 3" in df.error[2]
    assert "JobTimeoutError" in df.error[3] or "timed out" in df.error[3]
    assert df.job_id.tolist() == sw.job_ids and list(df.x) == [0, 1, 2, 3, 4]


def test_rerun_uses_the_cache_and_cache_false_does_not(nb_client, thread_worker):
    thread_worker(concurrency=4)
    first = nq.sweep(train, lr=[1, 2], depth=[1, 2])
    first.wait(timeout=30)
    n0 = published(nb_client)
    again = nq.sweep(train, lr=[1, 2], depth=[1, 2])
    assert published(nb_client) == n0 and again.cached == {0, 1, 2, 3}  # nothing submitted
    assert again.job_ids == first.job_ids and again.done()
    assert again.to_dataframe().score.tolist() == [1, 2, 2, 4]

    partly = nq.sweep(train, lr=[1, 2, 3], depth=[1, 2])  # two new points only
    assert published(nb_client) == n0 + 2 and len(partly.cached) == 4
    partly.wait(timeout=30)

    forced = nq.sweep(train, lr=[1, 2], depth=[1, 2], cache=False)
    assert published(nb_client) == n0 + 6 and forced.cached == set()
    forced.wait(timeout=30)

    k = 10  # a different captured value is a different function: no reuse
    closure = nq.sweep(lambda lr, depth: lr * depth * k, lr=[1, 2], depth=[1, 2])
    assert published(nb_client) == n0 + 10 and closure.results(timeout=30) == [10, 20, 20, 40]


def test_an_edited_module_is_not_served_its_old_results(nb_client, thread_worker, tmp_path, monkeypatch):
    # cloudpickle stores an importable module's function by name only: the cache keys on the module's
    # source too, so an edit is a new function (here reloaded; after a kernel restart it is the same).
    thread_worker(concurrency=2, execution="threads")  # runs the reloaded module, as a restarted worker would
    source = tmp_path / "swept_model.py"
    source.write_text("def f(x):\n    return x * 10\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import swept_model

    first = nq.sweep(swept_model.f, x=[1, 2, 3])
    first.wait(30)
    again = nq.sweep(swept_model.f, x=[1, 2, 3])
    again.wait(30)
    assert again.cached == {0, 1, 2} and list(again.to_dataframe()["result"]) == [10, 20, 30]
    source.write_text("def f(x):\n    return x * 1000  # edited\n")
    importlib.reload(swept_model)
    edited = nq.sweep(swept_model.f, x=[1, 2, 3])
    edited.wait(30)
    assert edited.cached == set() and list(edited.to_dataframe()["result"]) == [1000, 2000, 3000]
    monkeypatch.delitem(sys.modules, "swept_model")


def test_ctrl_c_while_a_sweep_submits_cancels_what_it_sent_and_attach_finds_the_sweep(
    nb_client, thread_worker, monkeypatch, caplog
):
    # Ctrl-C lands while the second batch of points is being sent. The first batch, already sent, is
    # cancelled (nothing is left running that nobody follows); the call names the sweep it saved
    # before sending anything, and attach + retry_failed() run it all.
    import naq_nb.notebook.sweep as sweep_mod
    monkeypatch.setattr(sweep_mod, "_SUBMIT_BATCH", 10)
    real, calls, second = sweep_mod.submit_jobs, [], threading.Event()

    async def submit_slowly(client, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            second.set()
            await asyncio.get_running_loop().create_future()  # sends nothing more until cancelled
        return await real(client, batch)

    monkeypatch.setattr(sweep_mod, "submit_jobs", submit_slowly)
    said = _sweep_interrupted_when(second, caplog)
    assert "of the 10 points of the batches it had sent in full, 10 cancelled; a line above tells " in said[0], said[0]
    sweep_id = re.search(r"Sweep.attach\('([^']+)'\)", said[0]).group(1)
    thread_worker()  # hears of no cancel: it must find nothing of the sweep to run
    sw = Sweep.attach(sweep_id)
    wait_until(lambda: all(f.done() for f in sw.futures), timeout=30)  # the 20 never sent: not found
    assert [i for i, f in enumerate(sw.futures) if f.cancelled()] == list(range(10))
    assert set(sw.to_dataframe()["status"][:10]) == {"cancelled"}
    assert sw.retry_failed() == 30
    sw.wait(30)
    assert list(sw.to_dataframe()["result"]) == [a + 1 for a in range(30)]


def test_ctrl_c_while_a_sweep_stores_its_cache_cancels_every_point_it_sent(nb_client, thread_worker, monkeypatch,
                                                                          caplog):
    # Every batch is sent; the Ctrl-C lands while the cache store waits (as on a connection that is
    # down). The points are cancelled all the same, and the line says so only because they are.
    import naq_nb.notebook.sweep as sweep_mod
    from naq_nb.core.queue import Queue, get_status
    monkeypatch.setattr(sweep_mod, "_SUBMIT_BATCH", 10)
    storing = threading.Event()

    async def store_never(b, made, fn_digest):
        storing.set()
        await asyncio.get_running_loop().create_future()  # stores nothing until cancelled

    monkeypatch.setattr(sweep_mod, "cache_store", store_never)
    said = _sweep_interrupted_when(storing, caplog)
    assert "submitted its 30 points; of the 30 points it had sent, 30 cancelled. Sweep.attach(" in said[0], said[0]
    sw = Sweep.attach(re.search(r"Sweep.attach\('([^']+)'\)", said[0]).group(1))
    b = run_sync(nb_client.broker())
    assert {run_sync(get_status(b, jid))["status"] for jid in sw.job_ids} == {"cancelled"}
    assert run_sync(Queue(b, "default").count()) == 0, "no point is left to run"
    thread_worker()
    wait_until(lambda: all(f.done() for f in sw.futures), timeout=30)
    assert all(f.cancelled() for f in sw.futures)


def test_a_failed_point_is_not_served_from_the_cache(nb_client, thread_worker, tmp_path):
    thread_worker(concurrency=2)
    flag = str(tmp_path / "flag")
    nq.sweep(flaky, x=[1, 2], flag=[flag]).wait(timeout=30)
    n0 = published(nb_client)
    again = nq.sweep(flaky, x=[1, 2], flag=[flag])
    assert published(nb_client) == n0 + 1 and again.cached == {1}


async def test_cache_store_merges_shards_and_writes_one_record_per_shard(broker):
    """The cache is a few shard records per function, and concurrent writers of the same shard
    (two sweeps of one function at once) lose no entry."""
    from naq_nb.notebook.sweep_store import cache_lookup, cache_store
    fn = "f" * 64
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(600)]
    first, second = digests[:300], digests[300:]
    assert await cache_lookup(broker, digests, fn) == {}  # never stored: the marker is missing
    await asyncio.gather(cache_store(broker, [(d, f"a{i}") for i, d in enumerate(first)], fn),
                         cache_store(broker, [(d, f"b{i}") for i, d in enumerate(second)], fn))
    hits = await cache_lookup(broker, digests, fn)
    assert hits == {**{i: f"a{i}" for i in range(300)}, **{300 + i: f"b{i}" for i in range(300)}}
    kv = await broker.kv(broker.layout.meta_bucket)
    keys = [k for k in await kv.keys() if k.startswith(f"cache.{fn}")]
    assert len(keys) == 1 + len({d[:2] for d in digests}) <= 257  # the marker plus one record per shard
    await cache_store(broker, [(first[0], "again")], fn)  # a rerun points the call at its new job
    assert (await cache_lookup(broker, first[:2], fn)) == {0: "again", 1: "a1"}
    assert await cache_lookup(broker, first[:2], "e" * 64) == {}  # another function hits nothing


def test_attach_from_a_new_process(nb_client, thread_worker, nats_server):
    thread_worker(concurrency=2)
    sw = nq.sweep(jobs.add, a=[1, 2, 3], b=[10])
    sw.wait(timeout=30)
    script = textwrap.dedent(f"""
        import naq_nb as nq
        nq.connect({nats_server.url!r})
        sw = nq.Sweep.attach({sw.id!r})
        df = sw.to_dataframe()
        print(len(sw), sw.results(timeout=10), df.status.tolist(), sw.function)
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3 [11, 12, 13] ['succeeded', 'succeeded', 'succeeded'] jobs.add"
    with pytest.raises(SweepNotFoundError, match="no sweep with id 'feedbeef'"):
        Sweep.attach("feedbeef")


def test_large_sweep_record_is_stored_in_parts(nb_client):
    grid = [{"a": i, "b": os.urandom(400).hex()} for i in range(3000)]  # ~2.4 MB of incompressible points
    before = published(nb_client)
    sw = nq.sweep(jobs.add, grid=grid)  # three publish batches
    assert published(nb_client) == before + 3000 and len(set(sw.job_ids)) == 3000
    assert sw._head["parts"] >= 2  # over max_payload: cut into several keys
    back = Sweep.attach(sw.id)
    assert back.points == grid and back.job_ids == sw.job_ids


def test_cancel_pending_points(nb_client):
    sw = nq.sweep(jobs.add, a=[1, 2, 3], b=[1])  # no worker: they stay queued
    df = sw.to_dataframe()
    assert df.status.tolist() == ["queued"] * 3 and "result" not in df.columns
    assert sw.cancel() == 3
    wait_until(sw.done, timeout=10)
    assert sw.counts() == {"cancelled": 3}
    assert sw.retry_failed() == 3 and sw.counts() == {"queued": 3}  # cancelled points can be retried


async def test_async_forms(nb_client, thread_worker):
    thread_worker(concurrency=2)
    sw = await sweep_async(train, lr=[1, 2], depth=[5])
    assert (await sw) is sw and sw.summary() == "2/2 succeeded"
    back = await Sweep.attach_async(sw.id)
    assert [r["score"] for r in back.results()] == [5, 10]


@pytest.mark.parametrize("call, exc, match", [
    (lambda: nq.sweep(train, grid=[{"lr": 1, "depth": 1}], lr=[1]), ValueError, "either grid"),
    (lambda: nq.sweep(train), ValueError, "needs parameters"),
    (lambda: nq.sweep(train, lr=[], depth=[1]), ValueError, "'lr' has no values"),
    (lambda: nq.sweep(train, lr=range(10_000), depth=range(10_000)), ValueError,
     r"100,000,000 points \(lr: 10,000 x depth: 10,000\); one sweep takes at most 1,000,000"),
    (lambda: nq.sweep(train, grid=[{"lr": 1}] * 1_000_001), ValueError, r"1,000,001 points \(grid"),
    (lambda: nq.sweep(train, lr=0.1, depth=[1]), TypeError, r"'lr' must be a list.*lr=\[0.1\]"),
    (lambda: nq.sweep(train, lr="abc", depth=[1]), TypeError, "'lr' must be a list"),
    (lambda: nq.sweep(train, lr={1, 2}, depth=[1]), TypeError, "'lr' must be a list"),
    (lambda: nq.sweep(train, grid=[]), ValueError, "grid is empty"),
    (lambda: nq.sweep(train, grid={"lr": [1]}), TypeError, "grid must be a list of dicts"),
    (lambda: nq.sweep(train, grid=[{"lr": 1, "depth": 1}, 5]), TypeError, r"grid\[1\] must be a dict"),
    (lambda: nq.sweep(train, grid=[{"lr": 1, "depth": 1}, {"lr": 2}]), ValueError, "same parameters"),
    (lambda: nq.sweep(train, grid=[{1: 2}]), TypeError, "keyword-argument names"),
    (lambda: nq.sweep(42, x=[1]), TypeError, "needs a callable"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], options={"queue": "q", "retires": 3}), TypeError,
     "unknown job option 'retires'; did you mean 'retry'"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], options=["queue"]), TypeError, "options must be a dict"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], options={"job_id": "x"}), ValueError, "name one job"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], options={"queue": "bad queue"}), Exception, "invalid queue"),
    (lambda: nq.sweep(train, lr=[1, threading.Lock()], depth=[1]), SerializationError, "point 1"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], cache="yes"), TypeError, "cache must be True or False"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], name=3), TypeError, "name must be a string"),
    (lambda: nq.sweep(train, lr=[1], depth=[1], zz=[1, 2]), TypeError,
     r"sweep parameters \['depth', 'lr', 'zz'\] do not fit train\(.*\): got an unexpected keyword argument 'zz'"),
    (lambda: nq.sweep(train, lr=[1]), TypeError, "missing a required argument: 'depth'"),
    (lambda: nq.sweep.options(cache="yes"), TypeError, "cache must be True or False"),
    (lambda: nq.sweep.options(name=5), TypeError, "name must be a string"),
    (lambda: nq.sweep.options(client=5), TypeError, "client must be a naq_nb Client"),
    (lambda: nq.options(client=5), TypeError, r"options\(client=...\) needs a naq_nb Client"),
])
def test_bad_input_raises_and_submits_nothing(nb_client, call, exc, match):
    before = published(nb_client)
    with pytest.raises(exc, match=match):
        call()
    assert published(nb_client) == before
    with pytest.raises(TypeError, match="sweep id"):
        Sweep.attach(123)


def test_a_bad_wait_timeout_raises_naming_it(nb_client):
    sw = nq.sweep(jobs.add, a=[1], b=[1], options={"queue": "idle"})  # no worker: it stays queued
    for bad in ("x", float("nan"), -1):
        with pytest.raises(ValueError, match=r"wait\(timeout=...\) must be seconds >= 0"):
            sw.wait(timeout=bad)
        with pytest.raises(ValueError, match=r"wait_async\(timeout=...\)"):
            asyncio.run(sw.wait_async(timeout=bad))
    assert sw.counts() == {"queued": 1}
    assert sw.cancel() == 1


def test_a_blocking_sweep_wait_on_the_loop_thread_raises(nb_client, thread_worker):
    """Sweep.wait / results in an on_update callback (naq_nb's loop thread) waited for the very
    thread that resolves the points: it raises as a sync call there does."""
    sw = nq.sweep(jobs.add, a=[1], b=[1], options={"queue": "idle"})  # no worker: it stays queued
    out: dict[str, object] = {}
    fired = threading.Event()

    def cb(f) -> None:
        if not f.done() or fired.is_set():
            return
        for name, call in (("wait", lambda: sw.wait(timeout=0.5)), ("results", lambda: sw.results(timeout=0.5))):
            try:
                out[name] = call()
            except BaseException as exc:  # handed to the test
                out[name] = exc
        fired.set()

    nq.options(queue="later").submit(jobs.add, 1, 2).on_update(cb)
    thread_worker("later")  # only now can the job run: its end is seen by the callback
    assert fired.wait(30), "the callback ran"
    for name, got in out.items():
        assert isinstance(got, RuntimeError) and "naq_nb's own loop thread" in str(got), (name, got)
    assert sw.cancel() == 1


def test_unpicklable_function_submits_nothing(nb_client):
    lock = threading.Lock()
    before = published(nb_client)
    with pytest.raises(SerializationError, match="cannot be pickled"):
        nq.sweep(lambda x: lock, x=[1])
    assert published(nb_client) == before


def labelled(name, cache, x=0):
    return f"{name}-{cache}-{x}"


def test_function_parameters_never_collide_with_sweep_options(nb_client, thread_worker):
    """Row 11: a function taking `name` / `cache` gets them as swept parameters."""
    thread_worker()
    sw = nq.sweep(labelled, name=["a", "b"], cache=[1])
    assert sw.results(timeout=30) == ["a-1-0", "b-1-0"] and sw.name == "labelled"
    sw2 = nq.sweep.options(name="my run", cache=False, queue="default", timeout=30)(labelled, name=["c"],
                                                                                    cache=[2], x=[5])
    assert sw2.results(timeout=30) == ["c-2-5"] and sw2.name == "my run"
    assert sw2._options.timeout == 30
    # the old spelling still works for functions without such parameters
    sw3 = nq.sweep(jobs.add, a=[1], b=[2], name="old style", options={"timeout": 20})
    assert sw3.results(timeout=30) == [3] and sw3.name == "old style"
    with pytest.raises(TypeError, match="unknown job option 'timeot'"):
        nq.sweep.options(timeot=3)
    with pytest.raises(TypeError, match="parameter called name"):
        nq.sweep(jobs.add, a=[1], b=[2], name=["x"])


def test_points_whose_client_closed_say_so_in_the_table(nats_server, settings):
    # A cluster replaced under a sweep (nq.local() with other arguments) closes the client its futures
    # follow: wait() returned and the rows read "queued", with no error naming why they stopped.
    from naq_nb.client.client import Client
    c = Client(nats_server.url, settings=settings)
    try:
        sw = nq.sweep(jobs.add, a=[1, 2], b=[1], client=c)  # no worker: they stay queued
    finally:
        c.close_sync()
    sw.wait(10)
    df = sw.to_dataframe()
    assert df.status.tolist() == ["queued"] * 2
    assert all("attach" in e for e in df.error), df.error.tolist()


def test_a_point_whose_result_expired_says_so_in_the_frame(nats_server, settings):
    """Attached after NAQ_RESULT_TTL, a sweep's frame showed 'succeeded' rows with no error and no result
    column at all: nothing said the results had expired (each future held that error)."""
    from naq_nb.client.client import Client
    from naq_nb.core.worker import Worker
    from naq_nb.notebook.local import ServiceThread
    from nats.js.errors import KeyNotFoundError

    short = settings.with_(result_ttl=1.0)
    c = Client(nats_server.url, settings=short)
    t = ServiceThread(Worker("default", settings=short, concurrency=2, grace_period=2.0), "naq-test-worker").start(30.0)
    try:
        sw = nq.sweep.options(client=c)(jobs.add, a=[1, 2], b=[1])
        sw.wait(timeout=30)
        assert sw.to_dataframe().result.tolist() == [2, 3]
        b = run_sync(c.broker())
        results = run_sync(b.kv(b.layout.results_bucket))

        def expired() -> bool:  # every point's: the server's expiry does not follow write order
            for jid in sw.job_ids:
                try:
                    run_sync(results.get(jid))
                    return False
                except KeyNotFoundError:
                    pass
            return True

        wait_until(expired, timeout=15, interval=0.1)
        back = Sweep.attach(sw.id, client=c).wait(timeout=30)
        df = back.to_dataframe()
        assert df.status.tolist() == ["succeeded"] * 2
        assert all("result is gone" in (e or "") for e in df.error), df.error.tolist()
        assert back.retry_failed() == 2, "points with no result are run again"
        assert back.wait(timeout=30).to_dataframe().result.tolist() == [2, 3]
    finally:
        t.stop(5.0)
        c.close_sync()


def _sweep_interrupted_when(event: threading.Event, caplog) -> list[str]:
    """A sweep of 30 points given a Ctrl-C once ``event`` is set; the lines saying it was interrupted."""
    main = threading.main_thread().ident  # Ctrl-C, sent to the thread that handles it (a process-wide
    # signal may land on another thread, and then never wakes the main one's wait)
    threading.Thread(target=lambda: event.wait() and signal.pthread_kill(main, signal.SIGINT), daemon=True).start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level("ERROR", logger="naq_nb.client"), pytest.raises(KeyboardInterrupt):
            nq.sweep(jobs.add, a=list(range(30)), b=[1])
    finally:
        signal.signal(signal.SIGINT, previous)
    said: list[str] = []
    wait_until(lambda: said.extend(r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage())
               or said, timeout=30)
    return said
