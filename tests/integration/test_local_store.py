"""``nq.local()`` keeps its store per user and folder: a restarted kernel gets its jobs and sweeps back."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import naq_nb as nq
from naq_nb.core.errors import JobNotFoundError, NaqException
from naq_nb.notebook.local_store import default_store_dir
from naq_nb.notebook.sweep_store import SweepNotFoundError

from helpers import ROOT

CELL = textwrap.dedent("""
    import json, os, sys, naq_nb as nq
    def add(a, b):  # the same cell in both kernels: same code, same lines
        return a + b
""")

FIRST = CELL + textwrap.dedent("""
    c = nq.local(workers=2)
    j = nq.submit(lambda x: x * 3, 14)
    assert j.result(timeout=30) == 42
    sw = nq.sweep(add, a=[1, 2], b=[10, 20])
    sw.wait(30)
    print(json.dumps({"job": j.job_id, "sweep": sw.id, "store": str(c.server.store_dir), "repr": repr(c)}),
          flush=True)
    sys.stdin.read()  # stay alive (a kernel) until the test kills us
""")

SECOND = CELL + textwrap.dedent("""
    ids = json.loads(sys.argv[1])
    c = nq.local(workers=2)
    j = nq.job(ids["job"])
    sw = nq.Sweep.attach(ids["sweep"])
    again = nq.sweep(add, a=[1, 2], b=[10, 20])  # the same cell run again: its points come from the cache
    print(json.dumps({"result": j.result(timeout=30), "sweep": sw.results(timeout=30), "cached": len(again.cached),
                      "store": str(c.server.store_dir), "repr": repr(c)}), flush=True)
    c.stop()
""")


def _env(local_dir: str) -> dict:
    return {**os.environ, "NAQ_LOCAL_DIR": local_dir, "PYTHONPATH": str(ROOT)}



def test_kernel_restart_gets_job_and_sweep_back(tmp_path):
    """Process 1 (a kernel) runs a job and a sweep and is SIGKILLed; process 2 in the same folder gets both back."""
    proj = tmp_path / "project"
    proj.mkdir()
    env = _env(str(tmp_path / "stores"))
    first = subprocess.Popen([sys.executable, "-c", FIRST], cwd=proj, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = first.stdout.readline()
        assert line, first.stderr.read()
        ids = json.loads(line)
    finally:
        first.send_signal(signal.SIGKILL)  # a kernel restart: no atexit, no clean stop
        first.wait(30)
    assert ids["store"].startswith(str(tmp_path / "stores" / "project-"))
    assert "kept across restarts" in ids["repr"] and ids["store"] in ids["repr"]

    out = subprocess.run([sys.executable, "-c", SECOND, json.dumps(ids)], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["result"] == 42
    assert got["sweep"] == [11, 21, 12, 22]
    assert got["cached"] == 4  # the sweep cache came back too
    assert got["store"] == ids["store"]
    assert "kept across restarts" in got["repr"] and ", new" not in got["repr"]


def test_store_is_per_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NAQ_LOCAL_DIR", str(tmp_path))
    a, b = default_store_dir(tmp_path / "a"), default_store_dir(tmp_path / "b")
    assert a != b and a.parent == b.parent == tmp_path and a.name.startswith("a-")
    assert default_store_dir(tmp_path / "a") == a


def test_unknown_id_on_a_new_store_says_so(no_cluster_left):
    c = nq.local(workers=1, scheduler=False)
    assert c.store_new and "kept across restarts, new" in repr(c)
    with pytest.raises(JobNotFoundError, match="brand new"):
        nq.job("nosuchjob123")
    with pytest.raises(SweepNotFoundError, match="brand new"):
        nq.Sweep.attach("nosuchsweep123")


def test_temporary_store_mode(no_cluster_left):
    c = nq.local(workers=1, scheduler=False, store_dir=None)
    store = c.server.store_dir
    assert "temporary" in repr(c)
    with pytest.raises(JobNotFoundError, match="temporary store"):
        nq.job("nosuchjob123")
    pending = nq.options(queue="nobody").submit(pow, 2, 3)
    c.stop()
    assert not store.exists()  # deleted at stop
    # Not "the job goes on: attach it": it went with the store.
    with pytest.raises(NaqException, match="temporary store deleted: the job is gone"):
        pending.result(timeout=10)


def test_busy_default_store_falls_back_to_temporary(no_cluster_left):
    store = default_store_dir()
    store.mkdir(parents=True)
    with open(store / "naq-local.lock", "w") as held:  # another kernel in this folder
        held.write("pid=4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.warns(UserWarning, match="in use by process 4242.*TEMPORARY"):
            c = nq.local(workers=1, scheduler=False)
        assert "default store is in use" in repr(c) and c.server.store_dir != store
        c.stop()
        with pytest.raises(NaqException, match="in use by process 4242"):
            nq.local(workers=1, scheduler=False, store_dir=store)


def test_bad_store_dir_type():
    with pytest.raises(TypeError, match="store_dir"):
        nq.local(store_dir=42)


def test_a_store_folder_that_cannot_be_made_names_its_setting(tmp_path, monkeypatch, no_cluster_left):
    # NAQ_LOCAL_DIR (or store_dir) pointing at a file was a bare NotADirectoryError from mkdir.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("NAQ_LOCAL_DIR", str(a_file))
    with pytest.raises(ValueError, match="NAQ_LOCAL_DIR") as info:
        nq.local(workers=1, scheduler=False)
    assert isinstance(info.value, NaqException)
    with pytest.raises(ValueError, match="store_dir"):
        nq.local(workers=1, scheduler=False, store_dir=a_file / "store")
