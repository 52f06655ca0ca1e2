"""A local setup for the dashboard page check, run as its own process.

Starts ``nq.local()`` (embedded nats-server, a thread worker with 2 slots, a
scheduler), creates one hourly schedule and one failed job (a job that fails
on its first run and succeeds when run again), prints one JSON line with the
ids, then submits a few short jobs a second (for the charts and the task
stream) until stdin closes or SIGTERM/SIGINT arrives.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path


def fails_first_time(counter: str) -> str:
    """Fails on its first run (counted in ``counter``), succeeds afterwards."""
    p = Path(counter)
    runs = len(p.read_text().splitlines()) + 1 if p.exists() else 1
    with open(p, "a") as f:
        f.write("run\n")
    if runs == 1:
        raise RuntimeError("first run fails on purpose")
    return f"run {runs} ok"


def hourly_report() -> str:
    return "report"


def work(seconds: float) -> float:
    """Background load for the charts and the task stream."""
    import time
    time.sleep(seconds)
    return seconds


def _load(stop: threading.Event) -> None:
    import random

    import naq_nb as nq
    while not stop.wait(0.25):
        nq.submit(work, random.choice((0.1, 0.3, 0.6, 1.0)))


def main() -> int:
    import naq_nb as nq
    from naq_nb.client.scheduling import schedule_sync

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = nq.local(workers=2, scheduler=True, store_dir=None)
    try:
        sched = schedule_sync(hourly_report, interval=3600, client=cluster.client)
        counter = str(Path(tempfile.mkdtemp(prefix="naq-fixture-")) / "runs")
        fut = nq.options(max_retries=0).submit(fails_first_time, counter)
        try:
            fut.result(timeout=60)
            raise SystemExit("the fixture job was expected to fail")
        except RuntimeError:
            pass
        workers = cluster.client.workers_sync()
        # auth_url carries the generated credentials, for the dashboard process's environment only.
        print(json.dumps({"url": cluster.url, "auth_url": cluster.server.url_with_credentials(),
                          "failed_job": fut.job_id, "schedule_id": sched.job_id, "worker_id": workers[0]["id"], "counter": counter}), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        threading.Thread(target=_load, args=(stop,), daemon=True).start()
        stop.wait()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
