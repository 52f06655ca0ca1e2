"""saq on Redis: ``saq`` CLI, 1 process with concurrency 10; ``Job.refresh(until_complete=...)`` (pub/sub)."""

import os

from saq import Queue
from saq.job import TERMINAL_STATUSES, Status

queue = Queue.from_url(os.environ["BENCH_REDIS_URL"], name="bench")


async def noop(ctx):
    return 1


settings = {"queue": queue, "functions": [noop], "concurrency": 10}


def version() -> str:
    from importlib.metadata import version as v
    return v("saq")


class Bench:
    notes = "saq --workers 1, concurrency 10; Job.refresh(until_complete=...) (pub/sub)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/saq", "lib_saq.settings", "--workers", "1"]

    async def open(self) -> None:
        await queue.connect()

    async def enqueue(self):
        return await queue.enqueue("noop")

    async def result(self, job, timeout: float):
        await job.refresh(until_complete=timeout)
        if job.status != Status.COMPLETE:
            raise RuntimeError(f"saq job ended {job.status}: {job.error}")
        return job.result

    async def done(self, job) -> bool:
        fresh = await queue.job(job.key)  # a copy: the handle itself stays as enqueued
        return fresh is not None and fresh.status in TERMINAL_STATUSES

    async def close(self) -> None:
        await queue.disconnect()
