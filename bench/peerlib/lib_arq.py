"""arq on Redis: ``arq`` CLI, one worker with max_jobs=10; ``Job.result(poll_delay=0.001)``.

arq's worker and its result wait both poll (default every 0.5 s, which would cap the worker
at 20 jobs/s); both are set to 1 ms, arq's documented ``poll_delay`` knobs.
"""

import os

from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import JobStatus

redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
_pool = None


async def noop(ctx):
    return 1


class WorkerSettings:
    functions = [noop]
    redis_settings = redis_settings
    max_jobs = 10
    poll_delay = 0.001


def version() -> str:
    from importlib.metadata import version as v
    return v("arq")


class Bench:
    notes = "arq worker, max_jobs 10, poll_delay 1 ms; Job.result(poll_delay=0.001) (polls)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/arq", "lib_arq.WorkerSettings"]

    async def open(self) -> None:
        global _pool
        _pool = await create_pool(redis_settings)

    async def enqueue(self):
        return await _pool.enqueue_job("noop")

    async def result(self, job, timeout: float):
        return await job.result(timeout=timeout, poll_delay=0.001)

    async def done(self, job) -> bool:
        return await job.status() == JobStatus.complete

    async def close(self) -> None:
        await _pool.aclose()
