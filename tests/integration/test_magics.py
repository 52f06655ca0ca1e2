"""%naq magics in an in-process IPython shell, against a real server and worker."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import naq_nb as nq
from naq_nb.client.future import JobFuture
from naq_nb.notebook import local as local_mod
from naq_nb.notebook.magics import USAGE, cell_names

import jobs
from helpers import wait_until
from test_sweep import published


@pytest.fixture
def ip(nb_client):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "naq_nb")
    shell.user_ns.update(add=jobs.add, jobs=jobs)
    yield shell
    shell.run_line_magic("unload_ext", "naq_nb")
    InteractiveShell.clear_instance()


def run(ip, code: str):
    res = ip.run_cell(code)
    if res.error_in_exec is not None:
        raise res.error_in_exec
    if res.error_before_exec is not None:
        raise res.error_before_exec
    return res.result


def test_submit_returns_the_future(ip, thread_worker):
    thread_worker()
    run(ip, "args = (1,)\nopts = {'b': 41}\nj = %naq submit add(*args, **opts)")
    j = ip.user_ns["j"]
    assert isinstance(j, JobFuture) and j.result(timeout=30) == 42
    k = ip.run_line_magic("naq", "submit jobs.add(a=2, b=3)")
    assert k.result(timeout=30) == 5


@pytest.mark.parametrize("line, match", [
    ("submit add(1,", "cannot parse 'add\\(1,'"),
    ("submit 1 + 2", "needs a call like fn"),
    ("submit", "needs a call"),
    ("frobnicate", "unknown %naq subcommand 'frobnicate'"),
    ("", "%naq submit fn"),
    ("cancel", "needs one job id"),
    ("result abc notanumber", "timeout must be a number"),
    ("result abc inf", "timeout must be a number of seconds >= 0, not 'inf'"),
    ("result abc nan", "timeout must be a number of seconds >= 0, not 'nan'"),
    ("result abc -1", "timeout must be a number of seconds >= 0, not '-1'"),
    ("status 'abc", "%naq status: No closing quotation"),
    ("local start ²", "number of workers"),
    ("local start many", "number of workers"),
    ("local", "local start"),
])
def test_bad_lines_give_a_usage_message_and_submit_nothing(ip, nb_client, line, match):
    before = published(nb_client)
    with pytest.raises(UsageError, match=match):
        ip.run_line_magic("naq", line)
    assert published(nb_client) == before


def test_the_callee_must_exist(ip, nb_client):
    before = published(nb_client)
    with pytest.raises(NameError, match="nope"):
        ip.run_line_magic("naq", "submit nope(1)")
    assert published(nb_client) == before


def test_status_jobs_workers_cancel_result(ip, thread_worker):
    thread_worker()
    done = nq.submit(jobs.add, 1, 1)
    assert done.result(timeout=30) == 2
    idle = nq.options(queue="idle").submit(jobs.add, 5, 5)  # no worker on that queue
    st = ip.run_line_magic("naq", f"status {done.job_id}")
    assert isinstance(st, JobFuture) and st.status == "succeeded"
    table = ip.run_line_magic("naq", "status")
    assert set(table.job_id) == {done.job_id, idle.job_id}
    assert len(ip.run_line_magic("naq", "jobs")) == 2
    wait_until(lambda: len(ip.run_line_magic("naq", "workers")) == 1, timeout=10)
    assert ip.run_line_magic("naq", f"result {done.job_id} 5") == 2
    with capture_output() as cap:
        ip.run_line_magic("naq", f"cancel {idle.job_id}")
        ip.run_line_magic("naq", f"cancel {done.job_id}")
    assert f"job {idle.job_id} cancelled" in cap.stdout and "had already ended (succeeded)" in cap.stdout
    with pytest.raises(nq.JobNotFoundError):
        ip.run_line_magic("naq", "status nosuchjob")


def test_cell_magic_runs_on_a_worker_and_brings_names_back(ip, thread_worker):
    thread_worker()
    ip.user_ns["a"] = 8
    with capture_output() as cap:
        run(ip, "%%naq submit\nimport math, os\ny = a * 2\nz = math.sqrt(y)\nlock = __import__('threading').Lock()\n"
                "print('hello from', os.getpid() > 0)\n")
    assert ip.user_ns["y"] == 16 and ip.user_ns["z"] == 4.0 and "lock" not in ip.user_ns
    assert ip.user_ns["math"] is __import__("math")  # imported modules come back by name, not as values
    # a terminal shell gets no live display: the logs and the outcome, once, as text
    assert cap.stdout.count("hello from True") == 1 and "not brought back (cannot be pickled): lock" in cap.stdout
    assert "y = 16; z = 4.0; imported math, os" in cap.stdout and "__skipped__" not in cap.stdout
    assert not cap.outputs


def test_cell_magic_takes_the_notebooks_variables_even_named_like_builtins(ip, thread_worker):
    # A variable named input or id, or one starting with "_", is the notebook's own: the job gets it,
    # not the builtin (or a NameError). IPython's output history (_, _1) stays behind.
    thread_worker()
    ip.user_ns.update(input="data.csv", id=42, _offset=10)
    run(ip, "%%naq submit\nsrc = input\nkey = [id]\ntotal = _offset + 1\n")
    assert (ip.user_ns["src"], ip.user_ns["key"], ip.user_ns["total"]) == ("data.csv", [42], 11)


def test_a_keyword_given_twice_is_refused_as_python_refuses_it(ip, nb_client):
    before = published(nb_client)
    with pytest.raises(TypeError, match="keyword argument 'b' is given more than once"):
        ip.run_line_magic("naq", "submit add(1, **{'b': 100}, b=2)")
    assert published(nb_client) == before


def test_cell_magic_errors(ip, thread_worker):
    thread_worker()
    with pytest.raises(UsageError, match="does not parse"):
        ip.run_cell_magic("naq", "submit", "x = (\n")
    with pytest.raises(UsageError, match="the cell magic is %%naq submit"):
        ip.run_cell_magic("naq", "status", "x = 1\n")
    with pytest.raises(ZeroDivisionError):
        ip.run_cell_magic("naq", "submit", "x = 1 / 0\n")


def test_cell_names():
    loaded, stored = cell_names("import numpy as np\nfrom os import path\nfor i in range(n):\n    t = i\n"
                                "def f(q):\n    inner = q\n    return inner + k\nres = f(m)\n")
    assert stored == ["f", "i", "np", "path", "res", "t"]
    assert {"n", "m", "k", "range"} <= set(loaded) and "inner" in loaded and "q" in loaded


def test_help_lists_every_subcommand(ip):
    doc = ip.find_line_magic("naq").__doc__
    for sub in ("submit", "status", "jobs", "workers", "cancel", "result", "local start", "local stop", "%%naq"):
        assert sub in doc and sub in USAGE


def test_local_start_and_stop():
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "naq_nb")
        c = shell.run_line_magic("naq", "local start 1")
        assert c.running and c.worker_count == 1
        assert shell.run_line_magic("naq", "submit pow(2, 10)").result(timeout=30) == 1024
        shell.run_line_magic("naq", "local stop")
        assert not c.running and local_mod.current_cluster() is None
    finally:
        c = local_mod.current_cluster()
        if c is not None:
            c.stop()
        shell.run_line_magic("unload_ext", "naq_nb")
        InteractiveShell.clear_instance()


def test_workers_frame_counts_are_current_after_a_batch(ip, settings):
    """Row 9: `%naq workers` shows the jobs just processed, not the count of the last periodic heartbeat."""
    from naq_nb.core.worker import Worker
    from naq_nb.notebook.local import ServiceThread
    slow_beat = settings.with_(heartbeat_interval=60.0, worker_ttl=180.0)  # a periodic heartbeat would not come in time
    t = ServiceThread(Worker("default", settings=slow_beat, concurrency=4, grace_period=2.0), "naq-test-worker")
    t.start(30.0)
    try:
        nq.gather(nq.map(jobs.add, range(40), range(40)), timeout=30)
        wait_until(lambda: int(ip.run_line_magic("naq", "workers")["processed"].iloc[0]) == 40, timeout=10)
    finally:
        t.stop(5.0)
