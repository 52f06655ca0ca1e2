"""Sweep figures, measured in one run and printed (never asserted in tests).

A sweep of a trivial function over N points (default 10,000) on ``nq.local``
with 2 thread workers: time to submit, to all done, to the DataFrame, a
cached re-run (nothing resubmitted), the process's peak RSS, and the cost of
one SweepDisplay refresh (counts, window table, text and HTML) at N points.

Usage: python bench/sweep_bench.py [--points 10000] [--workers 2] [--refreshes 500]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trivial(i: int, j: int) -> dict:
    return {"sum": i + j}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--refreshes", type=int, default=500)
    a = ap.parse_args()

    import naq_nb as nq
    from naq_nb.notebook.widgets import SweepDisplay

    cluster = nq.local(workers=a.workers, scheduler=False)
    try:
        rss0 = rss_mb()
        per = max(1, a.points // 100)
        t0 = time.perf_counter()
        sw = nq.sweep(trivial, i=list(range(a.points // per)), j=list(range(per)))
        t_submit = time.perf_counter() - t0
        sw.wait(timeout=3600)
        t_done = time.perf_counter() - t0
        t1 = time.perf_counter()
        df = sw.to_dataframe()
        t_df = time.perf_counter() - t1
        assert len(df) == len(sw) and set(df.status) == {"succeeded"}, sw.summary()

        t2 = time.perf_counter()
        again = nq.sweep(trivial, i=list(range(a.points // per)), j=list(range(per)))
        t_cached = time.perf_counter() - t2
        assert len(again.cached) == len(sw)

        d = SweepDisplay(sw, publish=lambda bundle, update: None).show()
        idx = [random.randrange(len(sw)) for _ in range(a.refreshes)]
        costs = []
        for i in idx:
            c0 = time.perf_counter()
            d.update(i)   # the per-record callback (O(1) bookkeeping, a throttle poke)
            d.flush()     # one full refresh: widget-less state, text and HTML of the window
            costs.append(time.perf_counter() - c0)
        html_kb = len(d.html()) / 1024

        n = len(sw)
        print(f"sweep of {n} points, {a.workers} thread workers (nq.local)")
        print(f"  submit (validate, cache lookup, publish, record) {t_submit:8.2f} s  ({n / t_submit:,.0f} points/s)")
        print(f"  submit -> all done                              {t_done:8.2f} s  ({n / t_done:,.0f} jobs/s)")
        print(f"  to_dataframe                                    {t_df:8.3f} s")
        print(f"  cached re-run (0 jobs submitted)                {t_cached:8.2f} s")
        print(f"  sweep record: {sw._head['parts']} part(s), {sw._head['bytes'] / 1024:,.0f} KiB compressed")
        print(f"  peak RSS {rss_mb():,.0f} MiB (was {rss0:,.0f} MiB before the sweep)")
        print(f"  SweepDisplay refresh at {n} points: mean {statistics.mean(costs) * 1e3:.3f} ms, "
              f"p99 {sorted(costs)[int(len(costs) * 0.99) - 1] * 1e3:.3f} ms, HTML {html_kb:.1f} KiB")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
