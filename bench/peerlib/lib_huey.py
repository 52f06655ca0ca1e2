"""huey on Redis: ``huey_consumer`` with 10 worker threads; ``Result.get(blocking=True)``.

``notify_result=True`` (huey's documented switch) makes the blocking result wait a
BLPOP instead of polling from 50 ms upwards.
"""

import os

from huey import RedisHuey

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], notify_result=True)


@huey.task()
def noop():
    return 1


def version() -> str:
    import huey as h
    return h.__version__


class Bench:
    notes = "huey_consumer -w 10 -k thread; Result.get(blocking=True) with notify_result (BLPOP)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/huey_consumer", "lib_huey.huey", "-w", "10", "-k", "thread", "-q"]

    def open(self) -> None:
        pass

    def enqueue(self):
        return noop()

    def result(self, r, timeout: float):
        return r.get(blocking=True, timeout=timeout)

    def done(self, r) -> bool:
        return huey.storage.has_data_for_key(r.id)

    def close(self) -> None:
        pass
