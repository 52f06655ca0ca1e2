"""Per-call cost of the public API, one call at a time (issue 10's weak points), in one process.

Starts a nats-server and one ``naq worker`` CLI (``-c 10``), then measures, from an
asyncio main loop as a user's script would:

* enqueue: ``await Queue.enqueue(fn)`` N times, calls/s;
* e2e: first enqueue -> last result stored, jobs/s;
* readback: ``await fetch_job_result(job, timeout=60)`` for every finished job, ms per call
  (raw_get: nats-py's ``kv.get`` of the same keys on the same loop, the floor);
* readback_sync: ``fetch_job_result_sync(job)`` for the same jobs, ms per call;
* latency: enqueue then wait, one job at a time, p50 / p99 ms;
* enqueue_sync: ``Queue.enqueue_sync(fn)`` N times then ``flush_sync()``, calls/s;
* many: ``await enqueue_many(fn, [()] * M)``, jobs/s (``--many``, 0 to skip).

Usage: ``python bench/api_calls.py --jobs 500 --rounds 3 --many 20000`` (one JSON line per round).
Meant for before/after comparisons in the same conditions, not absolute figures.
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

sys.path.insert(0, str(Path(__file__).resolve().parent / "peerlib"))


def noop() -> int:
    return 1


async def raw_gets(url: str, bucket: str, keys: list[str]) -> float:
    """The floor for a read back: nats-py's own ``kv.get`` of the same keys, same loop, ms per call."""
    import nats
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        t = time.perf_counter()
        for k in keys:
            await kv.get(k)
        return (time.perf_counter() - t) / len(keys) * 1000
    finally:
        await nc.close()


async def one_round(url: str, n: int, many: int) -> dict:
    import naq_nb
    from naq_nb import Queue, enqueue_many, fetch_job_result, fetch_job_result_sync
    from lib_naq_nb import noop as fn  # importable by the worker (its cwd is bench/peerlib)
    q = Queue("bench", nats_url=url)
    out: dict = {}
    assert await fetch_job_result(await q.enqueue(fn), nats_url=url, timeout=300) == 1  # warm worker
    t0 = time.perf_counter()
    jobs = [await q.enqueue(fn) for _ in range(n)]
    out["enqueue_per_s"] = n / (time.perf_counter() - t0)
    for j in jobs:  # e2e end: every result there
        assert await fetch_job_result(j, nats_url=url, timeout=60) == 1
    out["e2e_per_s"] = n / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    for j in jobs:
        assert await fetch_job_result(j, nats_url=url, timeout=60) == 1
    out["readback_ms"] = (time.perf_counter() - t1) / n * 1000
    bucket = (await q.client.broker_here()).layout.results_bucket
    out["raw_get_ms"] = await raw_gets(url, bucket, [j.job_id for j in jobs])
    t1 = time.perf_counter()
    for j in jobs:
        assert fetch_job_result_sync(j, nats_url=url, timeout=60) == 1
    out["readback_sync_ms"] = (time.perf_counter() - t1) / n * 1000
    lat = []
    for _ in range(min(n, 200)):
        t = time.perf_counter()
        j = await q.enqueue(fn)
        assert await fetch_job_result(j, nats_url=url, timeout=60) == 1
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    out["lat_p50_ms"] = statistics.median(lat)
    out["lat_p99_ms"] = lat[int(len(lat) * 0.99) - 1]
    t1 = time.perf_counter()
    for _ in range(n):
        q.enqueue_sync(fn)
    if hasattr(q.client, "flush_sync"):  # absent before issue 10's client work (every call waited then)
        q.client.flush_sync()
    out["enqueue_sync_per_s"] = n / (time.perf_counter() - t1)
    if many:
        t1 = time.perf_counter()
        await enqueue_many(fn, [()] * many, queue_name="bench_many", nats_url=url)
        out["many_per_s"] = many / (time.perf_counter() - t1)
    naq_nb.close_sync_connections()
    out["load1"] = os.getloadavg()[0]
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--many", type=int, default=20000)
    args = ap.parse_args()
    from naq_nb.core.server import EmbeddedServer
    here = Path(__file__).resolve().parent
    with EmbeddedServer() as srv:
        # The worker runs this tree's naq_nb, as the caller does (not whatever the venv installed).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here / "peerlib"), str(here.parent)])}
        argv = ["-m", "naq_nb.cli.main", "--log-level", "WARNING", "worker", "bench", "-c", "10", "--nats-url", srv.url]
        w = subprocess.Popen([sys.executable, *argv], cwd=str(here / "peerlib"), env=env)
        try:
            for _ in range(args.rounds):
                print(json.dumps(asyncio.run(one_round(srv.url, args.jobs, args.many))), flush=True)
        finally:
            w.terminate()
            w.wait(10)


if __name__ == "__main__":
    main()
