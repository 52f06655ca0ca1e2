"""naq's README flow run as its README says, and naq's CLI options (issue 12, items 1 and 9).

The files below are naq's README snippets (tasks.py, main.py, the scheduling
examples, the batching snippets) with only the import line changed from
``naq`` to ``naq_nb``. ``naq worker default`` and ``naq scheduler`` run as
processes started from that folder through a console-script-like launcher, so
the folder is *not* on their ``sys.path`` unless the worker puts it there.
"""

import inspect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import naq_nb
from naq_nb import close_sync_connections, fetch_job_result_sync, list_scheduled_sync, schedule_sync
from naq_nb.cli.main import build_parser
from naq_nb.core.worker import Worker as CoreWorker

from helpers import ROOT

TASKS = '''\
# tasks.py
import time

def count_words(text):
    print(f"Counting words in: '{text[:20]}...'")
    time.sleep(1) # Simulate work
    count = len(text.split())
    print(f"Word count: {count}")
    return count
'''

MAIN = '''\
# main.py
from naq_nb import enqueue_sync
from tasks import count_words

print("Enqueuing job...")
# Enqueue synchronously (blocks until published)
job = enqueue_sync(count_words, "This is a sample text with several words.")

print(f"Job {job.job_id} enqueued.")
print("Run 'naq worker default' to process it.")
'''

SCHEDULE = '''\
# schedule_example.py
import datetime
from naq_nb import enqueue_at_sync, enqueue_in_sync
from tasks import count_words

now = datetime.datetime.now(datetime.timezone.utc)
run_at = now + datetime.timedelta(seconds=10)
run_in = datetime.timedelta(minutes=1)

# Schedule to run at a specific time (UTC recommended)
job_at = enqueue_at_sync(run_at, count_words, "Job scheduled for a specific time.")
print(f"Job {job_at.job_id} scheduled for {run_at}")

# Schedule to run after a delay
job_in = enqueue_in_sync(run_in, count_words, "Job scheduled after a delay.")
print(f"Job {job_in.job_id} scheduled to run in {run_in}")

print("Run 'naq scheduler' and 'naq worker default' to process scheduled jobs.")
'''

SCHEDULE_UTC = '''\
# schedule_example_utc.py
import datetime
from naq_nb import enqueue_at_sync, enqueue_in_sync
from tasks import count_words

# Get the current time in UTC
now_utc = datetime.datetime.now(datetime.timezone.utc)

# Schedule to run at a specific UTC time
run_at_utc = now_utc + datetime.timedelta(seconds=30)
job_at = enqueue_at_sync(run_at_utc, count_words, "Job scheduled with explicit UTC time.")
print(f"Job {job_at.job_id} scheduled for {run_at_utc} (UTC)")

# Scheduling with a timedelta is also implicitly UTC-based
# as the scheduler operates in UTC.
run_in_delta = datetime.timedelta(minutes=5)
job_in = enqueue_in_sync(run_in_delta, count_words, "Job scheduled with a delay from now (UTC).")
print(f"Job {job_in.job_id} scheduled to run in {run_in_delta}")
'''

SCHEDULE_NAIVE = '''\
# schedule_example_naive.py
import datetime
from naq_nb import enqueue_at_sync
from tasks import count_words

# This datetime is naive (no timezone info)
# naq will interpret this as UTC.
naive_run_time = datetime.datetime(2024, 12, 25, 10, 30, 0)

job_naive = enqueue_at_sync(naive_run_time, count_words, "Job scheduled with a naive datetime (treated as UTC).")
print(f"Job {job_naive.job_id} scheduled for {naive_run_time} (interpreted as UTC).")
'''

# The batching snippets use my_func and url without defining them; those lines are ours.
BATCH_ASYNC = '''\
import asyncio
from naq_nb.queue import Queue
import os
from batch_tasks import my_func

async def produce(url: str):
    q = Queue(nats_url=url)
    for i in range(1000):
        await q.enqueue(my_func, i)
    await q.close()

asyncio.run(produce(os.environ["NAQ_NATS_URL"]))
'''

BATCH_SYNC = '''\
from naq_nb.queue import enqueue_sync, close_sync_connections
from batch_tasks import my_func

for i in range(1000):
    enqueue_sync(my_func, i)

# Optionally close at the end of the batch
close_sync_connections()
'''


@pytest.fixture
def launcher(tmp_path):
    """A ``naq`` launcher outside the project folder, like a console script in a venv's bin/."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    path = bindir / "naq"
    path.write_text("import sys\nfrom naq_nb.cli.main import main\nsys.exit(main())\n")
    return path


@pytest.fixture
def env(nats_server, monkeypatch):
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    yield {**os.environ, "NAQ_NATS_URL": nats_server.url, "PYTHONPATH": str(ROOT)}
    naq_nb.set_default_client(None)
    close_sync_connections()


def start(launcher, *args, cwd, env, log):
    return subprocess.Popen([sys.executable, str(launcher), *args], cwd=cwd, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.args} did not stop on SIGTERM:\n{Path(log).read_text()[-2000:]}") from None
    assert code == 0, Path(log).read_text()[-2000:]


def run(script, cwd, env):
    out = subprocess.run([sys.executable, script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def test_naq_readme_flow_unchanged(tmp_path, launcher, env):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name, text in {"tasks.py": TASKS, "main.py": MAIN, "schedule_example.py": SCHEDULE,
                       "schedule_example_naive.py": SCHEDULE_NAIVE, "schedule_example_utc.py": SCHEDULE_UTC,
                       "batch_async.py": BATCH_ASYNC,
                       "batch_sync.py": BATCH_SYNC, "batch_tasks.py": "def my_func(i):\n    return i\n"}.items():
        (proj / name).write_text(text)
    wlog, slog = tmp_path / "worker.log", tmp_path / "scheduler.log"
    worker = start(launcher, "worker", "default", "--log-level", "DEBUG", cwd=proj, env=env, log=wlog)
    scheduler = start(launcher, "scheduler", cwd=proj, env=env, log=slog)
    try:
        # First, so that its job due in 10 s comes due while the snippets below run (checked after them).
        out = run("schedule_example.py", proj, env)
        at_id = re.search(r"Job (\w+) scheduled for", out).group(1)
        in_id = re.search(r"Job (\w+) scheduled to run in", out).group(1)
        row = {r["schedule_id"]: r for r in list_scheduled_sync()}[in_id]
        assert row["status"] == "active" and 30 < row["next_run"] - time.time() <= 61

        out = run("main.py", proj, env)
        job_id = re.search(r"Job (\w+) enqueued\.", out).group(1)
        assert fetch_job_result_sync(job_id, timeout=60) == 8, wlog.read_text()[-2000:]

        out = run("schedule_example_utc.py", proj, env)
        rows = {r["schedule_id"]: r for r in list_scheduled_sync()}
        for pattern, secs in ((r"Job (\w+) scheduled for", 30), (r"Job (\w+) scheduled to run in", 300)):
            row = rows[re.search(pattern, out).group(1)]
            assert row["status"] == "active" and secs - 20 < row["next_run"] - time.time() <= secs

        out = run("schedule_example_naive.py", proj, env)   # 2024 is past: it runs at once
        naive_id = re.search(r"Job (\w+) scheduled for", out).group(1)
        assert fetch_job_result_sync(naive_id, timeout=60) == 9

        run("batch_async.py", proj, env)
        run("batch_sync.py", proj, env)
        wait_for(lambda: naq_nb.Queue("default").count_sync() == 0, 120, "the 2,000 batch jobs to be taken")
        assert fetch_job_result_sync(at_id, timeout=90) == 6, slog.read_text()[-2000:]
    finally:
        stop(worker, wlog)
        stop(scheduler, slog)
    log = wlog.read_text()
    assert "No module named" not in log
    if "echo_output" in inspect.signature(CoreWorker.__init__).parameters:
        # naq's README: watch the job's prints in the worker's terminal (the worker's echo_output option).
        assert "Word count: 8" in log, log[-2000:]


def test_worker_module_path_and_log_level(tmp_path, launcher, env, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mtasks.py").write_text("def double(x):\n    return 2 * x\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = tmp_path / "w.log"
    worker = start(launcher, "worker", "modq", "-m", str(lib), "-l", "DEBUG", cwd=elsewhere, env=env, log=log)
    try:
        monkeypatch.syspath_prepend(str(lib))
        import mtasks   # importable here, so it travels by reference: the worker must import it
        job = naq_nb.enqueue_sync(mtasks.double, 21, queue_name="modq")
        assert fetch_job_result_sync(job, timeout=60) == 42, log.read_text()[-2000:]
    finally:
        stop(worker, log)
    # naq_nb's own debug line (asyncio's "Using selector" is not there on every loop: uvloop's has none)
    assert " DEBUG naq_nb.worker: " in log.read_text(), "-l DEBUG after the command sets the level"


def naq(launcher, *args, env):
    return subprocess.run([sys.executable, str(launcher), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_version_and_log_level_everywhere(launcher, env):
    out = naq(launcher, "--version", env=env)
    assert out.returncode == 0 and naq_nb.__version__ in out.stdout
    assert naq(launcher, "list-workers", "--log-level", "WARNING", env=env).returncode == 0
    assert naq(launcher, "-l", "ERROR", "list-scheduled", env=env).returncode == 0
    out = naq(launcher, "purge", "default", "-l", "LOUD", env=env)
    assert out.returncode == 2 and "--log-level must be one of" in out.stderr
    out = naq(launcher, "scheduler", "--poll-interval", "0", env=env)
    assert out.returncode == 2 and "--poll-interval" in out.stderr
    args = build_parser().parse_args(["scheduler", "-p", "0.5"])
    assert args.poll_interval == 0.5


def test_list_scheduled_filters(launcher, env):
    a = schedule_sync(naq_nb.Queue, "x", cron="0 3 * * *", queue_name="reports")
    b = schedule_sync(naq_nb.Queue, "y", interval=600, queue_name="mail", timezone="Europe/Paris")
    naq_nb.pause_scheduled_job_sync(b)
    out = naq(launcher, "list-scheduled", "--status", "paused", env=env).stdout
    assert b.job_id in out and a.job_id not in out
    out = naq(launcher, "list-scheduled", "-q", "reports", env=env).stdout
    assert a.job_id in out and b.job_id not in out
    out = naq(launcher, "list-scheduled", "--job-id", b.job_id, "--detailed", env=env).stdout
    assert b.job_id in out and a.job_id not in out and "MISFIRE" in out and "Europe/Paris" in out
    out = naq(launcher, "list-scheduled", "-s", "failing", env=env)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_dashboard_host_and_port_options(monkeypatch, launcher, env):
    args = build_parser().parse_args(["dashboard", "-h", "0.0.0.0", "-p", "8123"])
    assert (args.host, args.port) == ("0.0.0.0", 8123)
    monkeypatch.setenv("NAQ_DASHBOARD_HOST", "10.1.2.3")
    monkeypatch.setenv("NAQ_DASHBOARD_PORT", "8777")
    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port) == ("10.1.2.3", 8777)
    monkeypatch.setenv("NAQ_DASHBOARD_PORT", "99999")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dashboard"])
    out = naq(launcher, "dashboard", "--help", env=env)
    # "--host HOST, -h HOST" before Python 3.13, "--host, -h HOST" since
    assert out.returncode == 0 and re.search(r"--host( HOST)?, -h HOST", out.stdout), out.stdout
