"""The job processes alone: what one call into a child costs, with no NATS in the way.

``C`` slots each call a no-op through the worker's :class:`ProcessPool` (one frame to a
child, one back), as a worker with ``--execution processes -c C`` does per job, for N
calls. It prints calls/s and the CPU a call costs this process (the worker's side) and
the children, read from /proc over the same span. Beside ``drain_bench.py``'s "job
processes" figure it tells what the children cost on their own and what they cost when
they share 2 cores with nats-server and the worker's loop (more wake-ups, each dearer).

Usage: python bench/procpool_bench.py [--calls 10000] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from peerlib.lib_naq_nb import noop  # noqa: E402

from naq_nb.core.procpool import ProcessPool  # noqa: E402
from naq_nb.core.serialization import get_serializer  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(calls: int, concurrency: int) -> dict:
    ser = get_serializer("pickle")
    pool = ProcessPool(concurrency, ser)
    pool.start()
    if not await pool.wait_ready(60):
        raise SystemExit("the job processes did not start within 60 s")
    body = ser.dumps_call(noop, (), {})
    per_slot = calls // concurrency

    async def slot() -> None:
        for i in range(per_slot):
            reply = await pool.call(await pool.acquire(), f"j{i}", "bench", 1, body, None)
            if reply[0] != "ok":
                raise SystemExit(f"a call failed: {reply!r}")

    pids = list(pool.pids)
    own0, kids0, t0 = _own_cpu(), sum(map(_cpu_seconds, pids)), time.perf_counter()
    try:
        await asyncio.gather(*(slot() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        own, kids = _own_cpu() - own0, sum(map(_cpu_seconds, pids)) - kids0
    finally:
        await pool.close()
    n = per_slot * concurrency
    return {
        "calls_per_s": round(n / elapsed, 1),
        "worker_cpu_ms_per_call": round(own / n * 1000, 3),
        "children_cpu_ms_per_call": round(kids / n * 1000, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    r = asyncio.run(run(args.calls, args.concurrency))
    print(
        f"{r['calls_per_s']:,.0f} calls/s with {args.concurrency} job processes; CPU per call: this process "
        f"{r['worker_cpu_ms_per_call']:.3f} ms, the children {r['children_cpu_ms_per_call']:.3f} ms "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    print(r)


if __name__ == "__main__":
    main()
