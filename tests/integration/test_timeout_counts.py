"""What a job's timeout counts: its call, from when its job process has loaded the function and the
arguments (the import of the function's module, the unpickling), not that loading.

A job process imports a function's module the first time one of its jobs calls into it. That import
counted in the job's timeout: under load, a point of a sweep whose call takes no time failed as
"timed out after 3s" because its module (the test module: pytest, naq_nb...) took that long to import
in a fresh job process. In threads mode the call is decoded before its timeout starts; job processes
now do the same, and bound the loading on its own (``LOAD_WAIT``) so a module that never finishes
importing still ends its job.
"""

import importlib
import sys

import pytest

from naq_nb.core import execution
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

SLOW_MODULE = """
import pathlib
import time

# A module slow to import (a big library, a model loaded at import): {load} s, or until {release} exists.
_end = time.monotonic() + {load}
while time.monotonic() < _end and not pathlib.Path({release!r}).exists():
    time.sleep(0.02)


def quick(x):
    return x + 1


async def quick_async(x):
    return x + 1
"""


def _slow_module(tmp_path, monkeypatch, name, load):
    """Write module ``name`` whose import takes ``load`` seconds (or until ``release`` is written)."""
    release = tmp_path / "release"
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE.format(load=load, release=str(release)))
    monkeypatch.syspath_prepend(str(tmp_path))  # the job processes get the worker's sys.path with each job
    monkeypatch.delitem(sys.modules, name, raising=False)
    return release


@pytest.mark.parametrize("fn", ["quick", "quick_async"])
async def test_the_import_of_a_jobs_module_in_its_job_process_is_not_counted_in_its_timeout(
        broker, start_worker, tmp_path, monkeypatch, fn):
    """The import takes 2 s, the call nothing, the timeout is 1 s: the job succeeds (it timed out)."""
    name = f"slow_to_import_{fn}"
    _slow_module(tmp_path, monkeypatch, name, load=2.0)
    func = getattr(importlib.import_module(name), fn)  # here too (pickled by reference): 2 s once
    await start_worker(concurrency=1)  # processes: a fresh job process imports the module with the job
    job = await Queue(broker).configure(timeout=1).enqueue(func, 1)
    rec = await wait_for_result(broker, job.job_id, 30)
    assert rec.status == "succeeded", rec.meta.get("error")
    assert rec.unwrap() == 2


async def test_a_job_whose_module_never_finishes_importing_still_ends_at_the_loading_bound(
        broker, start_worker, tmp_path, monkeypatch):
    """Loading is bounded on its own (``LOAD_WAIT``, at least the timeout), the job process is killed,
    and the error says the job never started rather than that it ran too long."""
    monkeypatch.setattr(execution, "LOAD_WAIT", 1.5)
    release = _slow_module(tmp_path, monkeypatch, "never_imported", load=120.0)
    try:
        w = await start_worker(concurrency=1)
        # By name: imported only where the job runs, so this test's process never waits on it.
        job = await Queue(broker).configure(timeout=0.5).enqueue("never_imported:quick", 1)
        rec = await wait_for_result(broker, job.job_id, 30)
        assert rec.status == "failed"
        assert "JobTimeoutError" in rec.meta["error"]
        assert "had not loaded its function and arguments within 1.5s" in rec.meta["error"], rec.meta["error"]
        nxt = await Queue(broker).enqueue("jobs:add", 1, 2)
        assert (await wait_for_result(broker, nxt.job_id, 30)).unwrap() == 3, "the slot takes the next job"
        assert w.execution.pool.restarts >= 1, "the loading job process was killed"
    finally:
        release.write_text("go")
