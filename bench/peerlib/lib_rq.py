"""rq on Redis: ``rq worker-pool -n 10``, ten worker processes; ``Job.latest_result(timeout=...)``
(a blocking XREAD on the job's result stream).

The workers are rq's ``SimpleWorker`` (runs the job in the worker process): rq's default worker
forks a work horse per job, about 10-50 jobs/s on two cores, which would make a 10,000-job run
last most of an hour. ``BENCH_RQ_FORK=1`` (``peers.py --rq-fork``) measures the default instead.
"""

import os

from redis import Redis
from rq import Queue
from rq.job import JobStatus

_url = os.environ["BENCH_REDIS_URL"]
_fork = os.environ.get("BENCH_RQ_FORK") == "1"
queue = Queue("bench", connection=Redis.from_url(_url))


def noop():
    return 1


def version() -> str:
    from importlib.metadata import version as v
    return v("rq")


class Bench:
    notes = (f"rq worker-pool -n 10 ({'default forking worker' if _fork else 'SimpleWorker, no fork per job'}); "
             "Job.latest_result(timeout) (XREAD)")

    def worker_argv(self, bindir: str) -> list[str]:
        cls = [] if _fork else ["-w", "rq.worker.SimpleWorker"]
        return [f"{bindir}/rq", "worker-pool", "bench", "-n", "10", "-u", _url, "-q", *cls]

    def open(self) -> None:
        pass

    def enqueue(self):
        return queue.enqueue(noop)

    def result(self, job, timeout: float):
        r = job.latest_result(timeout=int(timeout))
        if r is None or r.type != r.Type.SUCCESSFUL:
            raise RuntimeError(f"rq job {job.id}: {r and r.exc_string}")
        return r.return_value

    def done(self, job) -> bool:
        return job.get_status(refresh=True) == JobStatus.FINISHED

    def close(self) -> None:
        queue.connection.close()
