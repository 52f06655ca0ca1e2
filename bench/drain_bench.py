"""A worker draining an already-filled queue, beside the raw nats-py ceiling of the same run.

N no-op jobs are enqueued first, then one ``naq worker bench -c C`` is started;
the drain rate is counted from its first result to its last (so the worker's
start-up is not in it), as ``bench/peers.py``'s drain phase does. The raw
ceiling (pull + one KV put + ack, 256 in flight) runs on a server of its own just
before. CPU is read from /proc over the same span, per process: the worker, its
job processes, nats-server and this bench (which counts results by subscribing
to them), so the printout shows what a job costs in all and where; and what a
raw message costs the raw client and its server. ``--profile out.svg`` records
the worker with py-spy while it drains.

Usage: python bench/drain_bench.py [--jobs 5000] [--concurrency 10] [--execution processes] [--async-job]
       [--profile f.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import nats  # noqa: E402
from nats.js import api  # noqa: E402
from peerlib.raw_nats import pull_kv  # noqa: E402

from naq_nb.core.broker import Broker  # noqa: E402
from naq_nb.core.queue import Queue  # noqa: E402
from naq_nb.core.server import EmbeddedServer  # noqa: E402
from naq_nb.core.settings import Settings  # noqa: E402


async def ceiling(url: str, n: int, server_pid: int) -> dict:
    """The raw rate, and the CPU a message costs this process and the server while it runs."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="RAW", subjects=["raw.>"], retention=api.RetentionPolicy.WORK_QUEUE))
    try:
        mine, server = time.process_time(), cpu_seconds(server_pid)[0]
        rate = await pull_kv(js, n)
        return {"ceiling_per_s": rate, "raw_client_cpu_ms_per_msg": 1000 * (time.process_time() - mine) / n,
                "raw_server_cpu_ms_per_msg": 1000 * (cpu_seconds(server_pid)[0] - server) / n}
    finally:
        await nc.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process ``pid`` and of its live children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    kids = [int(k) for t in Path(f"/proc/{pid}/task").iterdir()
            for k in (t / "children").read_text().split()]
    return one(pid), sum(one(k) for k in kids)


async def drain(url: str, n: int, concurrency: int, execution: str, profile: str | None,
                async_job: bool = False, server_pid: int = 0) -> dict:
    # A job module that imports nothing: with throughput.py each of the worker's job processes
    # compiled nats-py and naq_nb on its first job (no .pyc here), CPU taken from the drain itself.
    from peerlib.lib_naq_nb import anoop, noop
    fn = anoop if async_job else noop
    b = await Broker.connect(settings=Settings.from_env(environ={}, nats_url=url))
    await b.ensure_layout()
    q = Queue(b, "bench")
    for i in range(0, n, 1000):
        await q.enqueue_jobs([q.make_job(fn) for _ in range(min(1000, n - i))])
    times: list[float] = []
    all_done = asyncio.Event()
    cpu_at_first: list[tuple[float, ...]] = []  # worker, its job processes, the server, this process

    async def on_result(_msg) -> None:
        times.append(time.perf_counter())
        if len(times) == 1:  # start-up (imports, children starting) is not the drain's
            cpu_at_first.append((*cpu_seconds(proc.pid), cpu_seconds(server_pid)[0], time.process_time()))
        if len(times) >= n:
            all_done.set()
    sub = await b.nc.subscribe(b.layout.kv_subject(b.layout.results_bucket, "*"), cb=on_result)
    env = {**os.environ, "NAQ_NATS_URL": url, "PYTHONPATH": os.pathsep.join(map(str, (BENCH, BENCH.parent)))}
    ts = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "--log-level", "WARNING", "worker", "bench",
                             "-c", str(concurrency), "--execution", execution], env=env)
    spy = None
    if profile:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile, "--pid",
                                str(proc.pid), "--rate", "1000", "--subprocesses", "--nonblocking",
                                "--format", "raw" if profile.endswith(".txt") else "flamegraph"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.wait_for(all_done.wait(), 600)
        cpu = (*cpu_seconds(proc.pid), cpu_seconds(server_pid)[0], time.process_time())
    finally:
        await sub.unsubscribe()
        proc.terminate()
        proc.wait(30)
        if spy is not None:
            spy.wait(60)
        await b.close()
    return {"drain_per_s": (n - 1) / (times[-1] - times[0]), "first_done_s": times[0] - ts,
            "last_done_s": times[-1] - ts, "worker_cpu_ms_per_job": 1000 * (cpu[0] - cpu_at_first[0][0]) / (n - 1),
            "children_cpu_ms_per_job": 1000 * (cpu[1] - cpu_at_first[0][1]) / (n - 1),
            "server_cpu_ms_per_job": 1000 * (cpu[2] - cpu_at_first[0][2]) / (n - 1),
            "bench_cpu_ms_per_job": 1000 * (cpu[3] - cpu_at_first[0][3]) / (n - 1)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--execution", default="processes")
    ap.add_argument("--profile", default=None,
                    help="py-spy profile of the worker: flame graph (.svg) or collapsed stacks (.txt)")
    ap.add_argument("--async-job", action="store_true",
                    help="drain an async no-op (runs on the worker's loop, as saq's and arq's jobs do)")
    args = ap.parse_args()
    with EmbeddedServer() as srv:
        assert srv.proc is not None
        raw = await ceiling(srv.url, args.jobs, srv.proc.pid)
    with EmbeddedServer() as srv:
        assert srv.proc is not None
        out = await drain(srv.url, args.jobs, args.concurrency, args.execution, args.profile, args.async_job,
                          srv.proc.pid)
    out.update(raw, ratio=out["drain_per_s"] / raw["ceiling_per_s"], load=os.getloadavg()[0])
    job_cpu = sum(out[k] for k in ("worker_cpu_ms_per_job", "children_cpu_ms_per_job", "server_cpu_ms_per_job",
                                   "bench_cpu_ms_per_job"))
    print(f"drain {out['drain_per_s']:,.0f} jobs/s, ceiling {raw['ceiling_per_s']:,.0f}/s, ratio {out['ratio']:.0%} "
          f"(first done {out['first_done_s']:.2f} s after the worker start, load {out['load']:.1f}); CPU per job: "
          f"worker {out['worker_cpu_ms_per_job']:.3f} ms, job processes {out['children_cpu_ms_per_job']:.3f} ms, "
          f"nats-server {out['server_cpu_ms_per_job']:.3f} ms, this bench (counting results) "
          f"{out['bench_cpu_ms_per_job']:.3f} ms")
    busy = job_cpu * out["drain_per_s"] / 1000  # cores these processes kept busy while the queue drained
    print(f"CPU a job, all processes: {job_cpu:.3f} ms ({os.cpu_count()} cores: at most "
          f"{1000 * (os.cpu_count() or 1) / job_cpu:,.0f} jobs/s; the drain kept {busy:.2f} of them busy, the "
          f"worker alone {out['worker_cpu_ms_per_job'] * out['drain_per_s'] / 1000:.2f}); the raw ceiling's message: "
          f"client {raw['raw_client_cpu_ms_per_msg']:.3f} ms, nats-server {raw['raw_server_cpu_ms_per_msg']:.3f} ms")
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))


if __name__ == "__main__":
    asyncio.run(main())
