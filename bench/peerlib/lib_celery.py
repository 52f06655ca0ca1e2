"""celery on Redis (broker and result backend): ``celery worker -c 10`` (the default prefork pool);
``AsyncResult.get(timeout=...)`` (pub/sub on the Redis backend)."""

import os

from celery import Celery

_url = os.environ["BENCH_REDIS_URL"]
app = Celery("lib_celery", broker=_url, backend=_url)


@app.task
def noop():
    return 1


def version() -> str:
    import celery
    return celery.__version__


class Bench:
    notes = "celery worker -c 10 (prefork pool); AsyncResult.get(timeout) (pub/sub)"

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/celery", "-A", "lib_celery", "worker", "-c", "10", "--loglevel", "WARNING"]

    def open(self) -> None:
        pass

    def enqueue(self):
        return noop.delay()

    def result(self, r, timeout: float):
        return r.get(timeout=timeout)

    def done(self, r) -> bool:
        return r.ready()

    def close(self) -> None:
        app.close()
