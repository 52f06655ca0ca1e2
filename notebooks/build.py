"""Write the demo notebooks from the cell lists below, then execute them in place.

The notebooks are committed with their executed outputs (nbval compares against
them, and GitHub shows them). Edit the cells here, then ``make notebooks``.

    python notebooks/build.py            # write + execute all
    python notebooks/build.py 03         # only the notebooks whose name starts with 03
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
IGNORE = "# NBVAL_IGNORE_OUTPUT\n"


class M(str):
    """A markdown cell."""  # live or timing-dependent output: run, but do not compare

QUICKSTART = [
    M("# naq_nb quickstart\n\nA local cluster (an embedded `nats-server`, a worker process and a scheduler in "
    "the background), a lambda and a closure as jobs, `await`, the live job display, and a failing job."),
    IGNORE + "import naq_nb as nq\n\ncluster = nq.local(workers=2)\ncluster",
    "job = nq.submit(lambda x: x ** 2, 3)\njob.result(timeout=30)",
    "offset = 10\n\ndef shifted(x):\n    return x + offset   # a closure: travels by value (cloudpickle)\n\n"
    "nq.submit(shifted, 5).result(timeout=30)",
    "await nq.submit(shifted, 1)   # jobs are awaitable in a kernel cell",
    M("## A live display\n\nThe display below is fed by a KV watch on naq's background thread: it moves while the "
    "kernel is idle or busy with another cell. Output printed by the job goes to its own display."),
    IGNORE + "import time\n\ndef train(steps):\n    for i in range(steps):\n        time.sleep(0.05)\n"
    "        nq.progress(i + 1, steps, f\"step {i + 1}\")\n        print(f\"step {i + 1}: loss {1 / (i + 1):.3f}\")\n"
    "    return {\"loss\": 1 / steps}\n\njob = nq.submit(train, 20)\njob",
    "job.result(timeout=60)",
    "job.status, job.progress[\"done\"], job.logs[-1]",
    M("## A failing job\n\nThe exception is raised locally as its original type, with the worker's traceback."),
    "def fails(x):\n    return 1 / x\n\nbad = nq.submit(fails, 0)\ntry:\n    bad.result(timeout=30)\n"
    "except ZeroDivisionError as exc:\n    print(\"raised here as\", type(exc).__name__)\n"
    "    print(exc.remote_traceback.strip().splitlines()[-1])",
    "bad.status",
    IGNORE + "nq.jobs()[[\"function\", \"status\", \"attempts\"]]",
    M("## After a kernel restart\n\n`nq.local()` keeps its store per user and working directory (its repr shows "
    "where), so a restarted kernel in this folder finds its jobs, sweeps and schedules again. Stopping the "
    "cluster and starting it again shows the same thing without restarting this kernel. "
    "`nq.local(store_dir=None)` runs on a temporary store instead."),
    "job_id = job.job_id\ncluster.stop()                 # what a kernel restart does to it\n"
    "cluster = nq.local(workers=2)  # same folder: same store\nnq.job(job_id).result(timeout=30)",
    "cluster.stop()",
]

SWEEP = [
    M("# Parameter sweeps\n\n`nq.sweep` fans a grid out to the workers, shows one live display, and collects a "
    "DataFrame. Failed points can be retried alone, and re-running the cell reuses finished points."),
    IGNORE + "import os, tempfile, time\nimport naq_nb as nq\n\ncluster = nq.local(workers=4)\n"
    "flag = os.path.join(tempfile.mkdtemp(), \"diverged-once\")\ncluster",
    "def train(lr, depth):\n    for step in range(5):\n        time.sleep(0.02)\n        nq.progress(step + 1, 5)\n"
    "    if lr == 0.1 and depth == 8 and not os.path.exists(flag):\n"
    "        open(flag, \"w\").close()          # fails the first time only\n"
    "        raise RuntimeError(\"diverged\")\n"
    "    return {\"loss\": round(1 / (1 + depth * lr * 10), 4), \"accuracy\": round(1 - 1 / (2 + depth), 4)}",
    IGNORE + "sw = nq.sweep(train, lr=[0.001, 0.01, 0.1], depth=[2, 4, 8])\nsw",
    "sw.wait(timeout=120)\ndf = sw.to_dataframe()\ndf[[\"lr\", \"depth\", \"loss\", \"accuracy\", \"status\", \"error\"]]",
    "%matplotlib inline\nax = df.pivot(index=\"depth\", columns=\"lr\", values=\"loss\").plot(marker=\"o\", "
    "title=\"loss by depth and learning rate\")",
    M("## Retry the failed point"),
    "retried = sw.retry_failed()\nsw.wait(timeout=120)\nsw.to_dataframe()[[\"lr\", \"depth\", \"loss\", \"status\"]]",
    M("## Re-running is free\n\nThe same function and points map to the same cache keys, so nothing is resubmitted."),
    "again = nq.sweep(train, lr=[0.001, 0.01, 0.1], depth=[2, 4, 8])\nagain.wait(timeout=60)\n"
    "print(f\"{len(again.cached)} of {len(again)} points came from the cache\")",
    M("## Sweep options never shadow your parameters\n\nOptions go apart, through `nq.sweep.options(...)`: a "
    "function may take `name`, `cache` or `queue` itself."),
    "def greet(name, excited):\n    return name + (\"!\" if excited else \".\")\n\n"
    "hello = nq.sweep.options(name=\"greetings\", timeout=30)(greet, name=[\"Ada\", \"Grace\"], excited=[True])\n"
    "hello.results(timeout=60)",
    M("## Many calls at once: `nq.map`, `gather`, `as_completed`, `wait`\n\n`nq.map` returns one handle with "
    "one live display (counts per status, throughput, ETA); the saved notebook keeps its final state."),
    IGNORE + "squares = nq.map(lambda x: x * x, range(40))\nsquares",
    "nq.gather(squares, timeout=60)[:8]",
    "firsts = [f.result() for f in nq.as_completed(squares, timeout=60)]   # in the order they finish\n"
    "sorted(firsts) == nq.gather(squares)",
    "done, pending = nq.wait(squares, timeout=60)\nlen(done), len(pending)",
    M("## Large data\n\nArguments, captured values and results over the server's message limit (1 MB here) go "
    "through the JetStream Object Store on their own. `nq.put` stores a value once: every job given the "
    "reference reads that one copy, so a map over a 32 MB array uploads it once."),
    "import numpy as np\n\nbig = np.random.default_rng(0).random(4_000_000)   # 32 MB\nref = nq.put(big)\n\n"
    "def window_mean(start):\n    return round(float(ref[start:start + 1000].mean()), 4)   # ref is the array here\n\n"
    "nq.gather(nq.map(window_mean, [0, 1000, 2000, 3000]), timeout=120)",
    "ones = nq.submit(lambda n: np.ones(n), 500_000).result(timeout=120)   # a 4 MB result comes back too\n"
    "ones.nbytes, float(ones.sum())",
    "cluster.stop()",
]

SCHEDULING = [
    M("# Scheduling\n\nDelayed jobs, a cron schedule with seconds, pause and resume, and the dashboard. "
    "`nq.local()` runs a scheduler next to the workers."),
    IGNORE + "import threading, time\nimport naq_nb as nq\n\ncluster = nq.local(workers=2)\ncluster",
    M("## A delayed job\n\nUntil it is due it shows status `scheduled`, with its due time."),
    "delayed = nq.options(delay=1.5).submit(lambda: \"hello from the future\")   # or at=datetime(...)\n"
    "delayed.status",
    "delayed.result(timeout=30)",
    M("## Cron with seconds\n\nSix fields: the sixth is seconds. This one fires every 2 seconds, three times."),
    "def tick():\n    return \"tick\"\n\nevery2 = nq.schedule_sync(tick, cron=\"* * * * * */2\", repeat=3)\n"
    "finished = threading.Event()\nwatch = nq.job(every2.job_id)   # the schedule's own status record\n"
    "watch.on_update(lambda f: f.status == \"succeeded\" and finished.set())\nfinished.wait(30)",
    "watch.record[\"runs\"], watch.status",
    M("## Pause, resume, modify, cancel"),
    "beat = nq.schedule_sync(tick, interval=60)\nnq.pause_scheduled_job_sync(beat)[\"status\"]",
    "nq.resume_scheduled_job_sync(beat)[\"status\"]",
    "nq.modify_scheduled_job_sync(beat, cron=\"0 9 * * 1-5\", timezone=\"Europe/Paris\")[\"cron\"]",
    IGNORE + "nq.schedules()",
    "nq.cancel_scheduled_job_sync(beat)",
    M("## The dashboard\n\nThroughput and queue depth over the last minutes, the task stream per worker, recent "
    "jobs (Details: arguments, logs, traceback), schedules (pause/resume) and failed jobs (requeue). When the "
    "cluster stops, it says so and stays as a static picture."),
    IGNORE + "dash = nq.dashboard(refresh=0.5)\ndash",
    "def step(x):\n    time.sleep(0.05)\n    return x * x\n\n"
    "squares = nq.map(step, range(60))\nnq.gather(squares, timeout=60)[-1]",
    "time.sleep(1.5)   # a few more chart samples before the cluster stops",
    "cluster.stop()",
]

REMOTE = [
    M("# Remote workers\n\nA NATS server somewhere, `naq worker` processes on other machines, and the notebook "
    "connecting by URL. Here a second embedded server and a worker subprocess stand in for them, so this "
    "runs anywhere."),
    "import subprocess, sys, time\nimport naq_nb as nq\nfrom naq_nb import EmbeddedServer\n\n"
    "server = EmbeddedServer().start()   # stands in for nats://nats.example.com:4222\n"
    "worker = subprocess.Popen([sys.executable, \"-m\", \"naq_nb.cli.main\", \"worker\", \"default\", \"-c\", \"4\",\n"
    "                           \"--nats-url\", server.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)",
    "client = nq.connect(server.url)   # user=, password=, token=, user_credentials=, tls= go to nats-py\n"
    "deadline = time.monotonic() + 60\nwhile not client.workers_sync() and time.monotonic() < deadline:\n"
    "    time.sleep(0.2)   # the worker process needs a moment to start and send its first heartbeat\n"
    "len(client.workers_sync())",
    IGNORE + "nq.workers()[[\"name\", \"pid\", \"queues\", \"concurrency\", \"state\"]]",
    M("## naq's API, unchanged"),
    "from naq_nb import enqueue_sync, fetch_job_result_sync\n\ndef count_words(text):\n"
    "    return len(text.split())\n\njob = enqueue_sync(count_words, \"This is a sample text with several words.\",\n"
    "                   nats_url=server.url)\nfetch_job_result_sync(job, nats_url=server.url, timeout=30)",
    M("## The notebook API against the same worker"),
    "squares = nq.map(lambda x: x * x, range(8))\nsquares.results(timeout=30)",
    "worker.terminate()\nworker.wait(30)\nclient.close_sync()\nserver.stop()",
]

RELIABILITY = [
    M("# Reliability: kill a worker mid-sweep\n\nTwo worker processes take a sweep; one is killed with SIGKILL "
    "while it holds jobs. JetStream redelivers what it held (after `NAQ_ACK_WAIT`, 3 s here) and every point "
    "finishes. Results are written once."),
    "import os, signal, subprocess, sys, threading, time\n\nos.environ[\"NAQ_ACK_WAIT\"] = \"3\"   # redeliver "
    "quickly for the demo (default 30 s)\nos.environ[\"NAQ_HEARTBEAT\"] = \"1\"\nimport naq_nb as nq\nfrom naq_nb import EmbeddedServer\n\nserver = "
    "EmbeddedServer().start()\nclient = nq.connect(server.url)\n\ndef start_worker():\n"
    "    return subprocess.Popen([sys.executable, \"-m\", \"naq_nb.cli.main\", \"worker\", \"-c\", \"2\", "
    "\"--nats-url\", server.url],\n                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\n"
    "workers = [start_worker(), start_worker()]\ndeadline = time.monotonic() + 60\n"
    "while len(client.workers_sync()) < 2 and time.monotonic() < deadline:\n    time.sleep(0.2)\n"
    "len(client.workers_sync())",
    "def slow_square(x):\n    time.sleep(1.0)\n    return x * x\n\nsw = nq.sweep(slow_square, x=list(range(16)))",
    "# wait (by push, on the jobs' status records) until the first worker runs a point, then kill it\n"
    "victim = workers[0].pid\nbusy = threading.Event()\nfor f in sw.futures:\n"
    "    f.on_update(lambda f: f.status == \"running\" and f\"-{victim}-\" in f.record.get(\"worker\", \"\")\n"
    "                and busy.set())\nbusy.wait(60)\nworkers[0].send_signal(signal.SIGKILL)\nworkers[0].wait()\n"
    "print(\"killed one worker while it ran a point\")",
    "sw.wait(timeout=120)\ndf = sw.to_dataframe()\nlist(df[\"result\"]), set(df[\"status\"])",
    IGNORE + "df[[\"x\", \"result\", \"status\", \"attempts\"]]",
    "int((df[\"attempts\"] > 1).sum()) > 0   # some points ran twice: those the killed worker held",
    "for w in workers[1:]:\n    w.terminate()\n    w.wait(30)\nclient.close_sync()\nserver.stop()",
]

NOTEBOOKS = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-parameter-sweep.ipynb": SWEEP,
    "03-scheduling.ipynb": SCHEDULING,
    "04-remote-workers.ipynb": REMOTE,
    "05-reliability.ipynb": RELIABILITY,
}


def build(name: str, cells: list[str]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for src in cells:
        nb.cells.append(new_markdown_cell(str(src)) if isinstance(src, M) else new_code_cell(src))
    return nb


def main(prefixes: list[str]) -> int:
    # nq.local() keeps its store per folder across runs: a build starts from an empty one, as a reader does.
    os.environ.setdefault("NAQ_LOCAL_DIR", tempfile.mkdtemp(prefix="naq-nb-build-"))
    for name, cells in NOTEBOOKS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        nb = build(name, cells)
        t = time.monotonic()
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        nbformat.write(nb, HERE / name)
        print(f"{name}: executed in {time.monotonic() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
