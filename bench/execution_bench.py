"""No-op sync jobs with process execution vs thread execution (throughput and latency).

Reuses bench/throughput.py's measurement, with one `naq worker --execution MODE`.

Usage: python bench/execution_bench.py [--jobs 5000] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402
from naq_nb.core.broker import Broker  # noqa: E402
from naq_nb.core.server import EmbeddedServer  # noqa: E402
from naq_nb.core.settings import Settings  # noqa: E402


async def measure(mode: str, jobs: int, concurrency: int) -> tuple[float, float, float]:
    with EmbeddedServer() as srv:
        env = {**os.environ, "NAQ_NATS_URL": srv.url,
               "PYTHONPATH": str(throughput.ROOT / "bench") + os.pathsep + str(throughput.ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "--log-level", "WARNING", "worker",
                                 "bench", "-c", str(concurrency), "--execution", mode], env=env)
        b = await Broker.connect(settings=Settings.from_env(environ={}, nats_url=srv.url))
        try:
            await b.ensure_layout()
            await throughput.wait_workers(b, 1)
            await throughput.latency(b, 20)  # warm: every child has imported the job's module
            rate = await throughput.naq_throughput(b, jobs)
            p50, p99 = await throughput.latency(b, 200)
        finally:
            await b.close()
            proc.terminate()
            proc.wait(30)
    return rate, p50, p99


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    for mode in ("threads", "processes"):
        rate, p50, p99 = await measure(mode, args.jobs, args.concurrency)
        print(f"{mode:9s}: {rate:7,.0f} jobs/s ({args.jobs} no-op jobs, concurrency {args.concurrency}); "
              f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
