"""Notebook-client figures, measured in one run and printed (never asserted in tests).

* ``import naq_nb`` in a fresh interpreter (several runs), and the same with the
  notebook names touched (``nq.submit``, ``nq.local``, ``nq.jobs``);
* ``nq.local()`` start to the first result of a submitted job;
* futures throughput: ``nq.map`` of N trivial jobs and every ``.result()``,
  against the core path (``Queue.enqueue_jobs`` + ``wait_for_result`` per job,
  all on one loop) on the same cluster and worker in the same run.

Usage: python bench/notebook_bench.py [--jobs 2000] [--runs 5] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trivial(x: int) -> int:
    return x


def import_times(code: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        out.append(time.perf_counter() - t0)
    return out


def interpreter_baseline(runs: int) -> float:
    return statistics.median(import_times("pass", runs))


def bench_imports(runs: int) -> None:
    base = interpreter_baseline(runs)
    plain = statistics.median(import_times("import naq_nb", runs))
    names = statistics.median(import_times("import naq_nb as nq; nq.submit; nq.local; nq.JobFuture", runs))
    frames = statistics.median(import_times("import naq_nb as nq; nq.jobs", runs))
    print(f"python startup (baseline)            : {base * 1000:7.1f} ms")
    print(f"import naq_nb                         : {(plain - base) * 1000:7.1f} ms over baseline "
          f"(median of {runs})")
    print(f"  + nq.submit / nq.local / JobFuture  : {(names - base) * 1000:7.1f} ms over baseline")
    print(f"  + nq.jobs (pandas loads at 1st call): {(frames - base) * 1000:7.1f} ms over baseline")


async def core_path(url: str, n: int) -> float:
    from naq_nb.core.broker import Broker
    from naq_nb.core.queue import Queue
    from naq_nb.core.results import wait_for_result
    from naq_nb.core.settings import Settings
    b = await Broker.connect(settings=Settings.from_env(nats_url=url))
    await b.ensure_layout()
    q = Queue(b)
    t0 = time.perf_counter()
    jobs = await q.enqueue_jobs([q.make_job(trivial, (i,)) for i in range(n)])
    sem = asyncio.Semaphore(256)  # one subscription per waiting job: keep the count sane

    async def one(jid: str) -> object:
        async with sem:
            return (await wait_for_result(b, jid, 120)).unwrap()
    results = await asyncio.gather(*(one(j.job_id) for j in jobs))
    dt = time.perf_counter() - t0
    assert results == list(range(n))
    await b.close()
    return dt


def bench_cluster(n: int, concurrency: int) -> None:
    import naq_nb as nq
    t0 = time.perf_counter()
    cluster = nq.local(workers=concurrency, scheduler=False)
    first = nq.submit(trivial, 1).result(timeout=60)
    start_to_first = time.perf_counter() - t0
    assert first == 1
    print(f"nq.local({concurrency}) start -> first result : {start_to_first * 1000:7.1f} ms")
    try:
        # warm both paths once
        [f.result(60) for f in nq.map(trivial, range(50))]
        asyncio.run(core_path(cluster.url, 50))

        t0 = time.perf_counter()
        futs = nq.map(trivial, range(n))
        values = [f.result(timeout=120) for f in futs]
        fut_dt = time.perf_counter() - t0
        assert values == list(range(n))
        core_dt = asyncio.run(core_path(cluster.url, n))
        print(f"futures: nq.map + .result() x {n}      : {n / fut_dt:8.0f} jobs/s ({fut_dt:.2f} s)")
        print(f"core:    enqueue_jobs + wait_for_result : {n / core_dt:8.0f} jobs/s ({core_dt:.2f} s)")
        print(f"futures / core                        : {core_dt / fut_dt:8.2f}x")
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    bench_imports(args.runs)
    bench_cluster(args.jobs, args.concurrency)


if __name__ == "__main__":
    main()
