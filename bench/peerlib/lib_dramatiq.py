"""dramatiq on Redis: ``dramatiq`` CLI, 1 process x 10 threads; Results middleware on Redis."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import ResultMissing, Results
from dramatiq.results.backends import RedisBackend

_url = os.environ["BENCH_REDIS_URL"]
backend = RedisBackend(url=_url)
broker = RedisBroker(url=_url)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def noop():
    return 1


def version() -> str:
    return dramatiq.__version__


class Bench:
    notes = "dramatiq --processes 1 --threads 10; Message.get_result(block=True) (BRPOPLPUSH)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/dramatiq", "lib_dramatiq", "--processes", "1", "--threads", "10"]

    def open(self) -> None:
        pass

    def enqueue(self):
        return noop.send()

    def result(self, msg, timeout: float):
        return msg.get_result(backend=backend, block=True, timeout=int(timeout * 1000))

    def done(self, msg) -> bool:
        try:
            msg.get_result(backend=backend)
            return True
        except ResultMissing:
            return False

    def close(self) -> None:
        broker.close()
