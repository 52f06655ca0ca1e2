"""saq on Redis: ``saq`` CLI, 1 process with concurrency 10; results by polling the job every 1 ms.

That is how saq's own ``Queue.apply``/``map`` wait (``poll_interval``, set to 1 ms here).
``Job.refresh(until_complete=...)`` is not used: it reads the job, then subscribes, and a
completion published in between is missed until the timeout (seen with saq 0.26.4).
"""

import asyncio
import os
import time

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
    notes = "saq --workers 1, concurrency 10; Job.refresh() every 1 ms, as Queue.apply(poll_interval=0.001) (polls)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/saq", "lib_saq.settings", "--workers", "1"]

    async def open(self) -> None:
        await queue.connect()

    async def enqueue(self):
        return await queue.enqueue("noop")

    async def result(self, job, timeout: float):
        deadline = time.monotonic() + timeout
        await job.refresh()
        while job.status not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saq job {job.key} not done after {timeout} s")
            await asyncio.sleep(0.001)
            await job.refresh()
        if job.status != Status.COMPLETE:
            raise RuntimeError(f"saq job ended {job.status}: {job.error}")
        return job.result

    async def done(self, job) -> bool:
        fresh = await queue.job(job.key)  # a copy: the handle itself stays as enqueued
        return fresh is not None and fresh.status in TERMINAL_STATUSES

    async def close(self) -> None:
        await queue.disconnect()
