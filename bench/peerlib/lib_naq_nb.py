"""naq_nb on NATS JetStream: one ``naq worker bench -c 10`` process; per job ``await Queue.enqueue(fn)``
and ``await fetch_job_result(job, timeout=60)`` (a push wait on the result key), the public API."""

import os

_url = os.environ.get("BENCH_NATS_URL", "")


def noop():
    return 1


async def anoop():
    """The async no-op (``bench/drain_bench.py --async-job``): runs on the worker's loop, no job process."""
    return 1


def version() -> str:
    import naq_nb
    return naq_nb.__version__


class Bench:
    notes = "naq worker bench -c 10; await Queue.enqueue(fn); await fetch_job_result(job, timeout=60) (push)"

    def __init__(self) -> None:
        from naq_nb import Queue
        self.queue = Queue("bench", nats_url=_url)

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/naq", "--log-level", "WARNING", "worker", "bench", "-c", "10", "--nats-url", _url]

    def open(self) -> None:
        pass

    async def enqueue(self):
        return await self.queue.enqueue(noop)

    async def result(self, job, timeout: float):
        from naq_nb import fetch_job_result
        return await fetch_job_result(job, nats_url=_url, timeout=timeout)

    async def done(self, job) -> bool:
        from naq_nb import JobNotFinishedError, fetch_job_result
        try:
            await fetch_job_result(job, nats_url=_url, timeout=0)
            return True
        except JobNotFinishedError:
            return False

    def close(self) -> None:
        from naq_nb import close_sync_connections
        close_sync_connections()
