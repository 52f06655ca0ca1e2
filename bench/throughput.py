"""Throughput and latency of naq_nb against the raw nats-py ceiling, measured in the same run.

* naq_nb: N no-op jobs enqueued (pipelined) into worker processes with a total
  concurrency of 10; the clock runs from the first enqueue until every result is
  readable (a push subscription on the results bucket counts them, then a sample
  is read back).
* raw: the same message path with bare nats-py: pipelined JetStream publish,
  pull in batches, one KV put per message (many in flight), ack after the put.
* latency: submit-to-result p50/p99 over single jobs with a warm worker.

Usage: python bench/throughput.py [--jobs 20000] [--workers 1] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nats
from nats.js import api

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from naq_nb.core.broker import Broker  # noqa: E402
from naq_nb.core.queue import Queue  # noqa: E402
from naq_nb.core.results import wait_for_result  # noqa: E402
from naq_nb.core.server import EmbeddedServer  # noqa: E402
from naq_nb.core.settings import Settings  # noqa: E402


def noop() -> None:
    return None


async def raw_ceiling(url: str, n: int, in_flight: int = 256) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="RAW", subjects=["raw.>"], retention=api.RetentionPolicy.WORK_QUEUE))
    kv = await js.create_key_value(bucket="raw_results", history=1)
    payload = b"x" * 200
    t0 = time.perf_counter()
    futs = [await js.publish_async("raw.jobs", payload) for _ in range(n)]
    sub = await js.pull_subscribe("raw.jobs", durable="raw", stream="RAW")
    sem = asyncio.Semaphore(in_flight)
    done = 0
    pending: set[asyncio.Task] = set()

    async def handle(msg) -> None:
        try:
            await kv.put(f"r{msg.metadata.sequence.stream}", b"ok")
            await msg.ack()
        finally:
            sem.release()
    while done < n:
        msgs = await sub.fetch(256, timeout=5)
        for m in msgs:
            await sem.acquire()
            t = asyncio.ensure_future(handle(m))
            pending.add(t)
            t.add_done_callback(pending.discard)
        done += len(msgs)
    await asyncio.gather(*pending)
    await asyncio.gather(*futs)
    dt = time.perf_counter() - t0
    await nc.close()
    return n / dt


def start_workers(url: str, workers: int, concurrency: int) -> list[subprocess.Popen]:
    env = {**os.environ, "NAQ_NATS_URL": url, "PYTHONPATH": str(ROOT / "bench") + os.pathsep + str(ROOT)}
    return [subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "--log-level", "WARNING", "worker",
                              "bench", "-c", str(concurrency)], env=env) for _ in range(workers)]


async def wait_workers(b: Broker, count: int) -> None:
    kv = await b.kv(b.layout.workers_bucket)
    for _ in range(400):
        try:
            if len(await kv.keys()) >= count:
                return
        except Exception:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("workers did not start")


async def naq_throughput(b: Broker, n: int) -> float:
    from throughput import noop as fn  # importable by the workers (bench/ is on their path)
    q = Queue(b, "bench")
    seen = 0
    all_done = asyncio.Event()

    async def on_result(_msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            all_done.set()
    sub = await b.nc.subscribe(b.layout.kv_subject(b.layout.results_bucket, "*"), cb=on_result)
    t0 = time.perf_counter()
    jobs = []
    for i in range(0, n, 1000):
        jobs += await q.enqueue_jobs([q.make_job(fn) for _ in range(min(1000, n - i))])
    await asyncio.wait_for(all_done.wait(), 600)
    dt = time.perf_counter() - t0
    await sub.unsubscribe()
    for j in jobs[:: max(1, n // 50)]:  # spot-check that results are readable and correct
        assert (await wait_for_result(b, j.job_id, 10)).ok
    return n / dt


async def latency(b: Broker, rounds: int = 300) -> tuple[float, float]:
    from throughput import noop as fn
    q = Queue(b, "bench")
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        j = await q.enqueue_job(q.make_job(fn))
        await wait_for_result(b, j.job_id, 10)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=10, help="total, split over the worker processes")
    args = ap.parse_args()
    with EmbeddedServer() as srv:
        raw = await raw_ceiling(srv.url, args.jobs)
        b = await Broker.connect(settings=Settings.from_env(environ={}, nats_url=srv.url))
        await b.ensure_layout()
        procs = start_workers(srv.url, args.workers, max(1, args.concurrency // args.workers))
        try:
            await wait_workers(b, args.workers)
            await naq_throughput(b, 500)  # warm-up
            rate = await naq_throughput(b, args.jobs)
            p50, p99 = await latency(b)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            await b.close()
    print(f"server {srv.info.get('version')}, {os.cpu_count()} cores, {args.jobs} jobs, "
          f"{args.workers} worker process(es), total concurrency {args.concurrency}")
    print(f"raw nats-py ceiling (publish_async + pull 256 + KV put + ack): {raw:,.0f} msg/s")
    print(f"naq_nb end to end (enqueue -> every result readable):         {rate:,.0f} jobs/s")
    print(f"ratio naq_nb / raw: {rate / raw:.0%}")
    print(f"submit-to-result latency, warm worker: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(json.dumps({"raw_per_s": round(raw), "naq_per_s": round(rate), "ratio": round(rate / raw, 3),
                      "p50_ms": round(p50, 3), "p99_ms": round(p99, 3)}))


if __name__ == "__main__":
    asyncio.run(main())
