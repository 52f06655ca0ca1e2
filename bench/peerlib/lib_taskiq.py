"""taskiq on Redis Streams: ``taskiq worker``, 1 process, 10 async tasks at once; Redis result backend.

``wait_result(check_interval=0.001)``: taskiq's result wait polls; 1 ms instead of the default 200 ms.
"""

import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

_url = os.environ["BENCH_REDIS_URL"]
broker = RedisStreamBroker(url=_url).with_result_backend(RedisAsyncResultBackend(redis_url=_url))


@broker.task
async def noop():
    return 1


def version() -> str:
    from importlib.metadata import version as v
    return f"{v('taskiq')} (taskiq-redis {v('taskiq-redis')})"


class Bench:
    # taskiq's stream receiver keeps reading after SIGTERM (seen with taskiq 0.13 / taskiq-redis 1.2):
    # the worker is idle whenever the bench stops it, so it is killed after a short grace.
    stop_grace = 3.0
    notes = ("taskiq worker --workers 1 --max-async-tasks 10 (RedisStreamBroker); "
             "wait_result(check_interval=0.001) (polls)")

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/taskiq", "worker", "lib_taskiq:broker", "--workers", "1",
                "--max-async-tasks", "10", "--log-level", "WARNING"]

    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self):
        return await noop.kiq()

    async def result(self, task, timeout: float):
        r = await task.wait_result(check_interval=0.001, timeout=timeout)
        if r.is_err:
            raise RuntimeError(f"taskiq job failed: {r.error!r}")
        return r.return_value

    async def done(self, task) -> bool:
        return await task.is_ready()

    async def close(self) -> None:
        await broker.shutdown()
