"""Sweep figures through the public notebook API, beside baselines in the same run.

What a user types, timed end to end::

    cluster = nq.local(workers=2)                 # (started before the clock, like a cell run earlier)
    sw = nq.sweep(trivial, i=range(100), j=range(100))
    df = sw.wait().to_dataframe()

reported as: ``nq.sweep`` returning (validate, cache lookup, publish, record),
all points done, the DataFrame built, and the notebook process's RSS growth
(current and peak, the peak reset just before the sweep) over those steps.
The cluster runs on a temporary store, so no earlier run's cache is hit; a
cached re-run of the same cell is timed after it. ``--display`` also follows the
sweep with its live display (as a notebook cell showing it would; a publish
that drops the bundles stands in for the kernel).

Baselines, in the same run and process: the same function in a plain loop
into a DataFrame, and over ``concurrent.futures.ProcessPoolExecutor(workers)``
(``ex.map``, default chunksize, as a user would type it).

Usage: python bench/sweep_bench.py [--points 10000] [--workers 2] [--execution processes]
                                   [--processes | --worker-thread] [--display] [--no-baseline] [--no-cached]
Figures are printed, never asserted in tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trivial(i: int, j: int) -> dict:
    return {"sum": i + j}


def _trivial_point(p: dict) -> dict:
    return trivial(**p)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    """Resident memory of this process now."""
    return _status_kb("VmRSS") / 1024


def peak_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak`."""
    return _status_kb("VmHWM") / 1024


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:  # an older kernel or a sandbox: the peak then counts from process start
        print(f"  (peak RSS not reset: {exc})")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process and by each process it started (server, job processes)."""
    import psutil
    me = psutil.Process()
    out = {"notebook process": sum(me.cpu_times()[:2])}
    for p in me.children(recursive=True):
        try:
            name = "nats-server" if "nats-server" in p.name() else f"job process {p.pid}"
            out[name] = sum(p.cpu_times()[:2])
        except psutil.Error:  # ended meanwhile
            continue
    return out


def grid(n: int) -> tuple[list[int], list[int]]:
    per = max(1, int(round(n ** 0.5)))
    return list(range(n // per)), list(range(per))


def baselines(n: int, workers: int) -> None:
    import pandas as pd
    ii, jj = grid(n)
    points = [{"i": i, "j": j} for i in ii for j in jj]
    t0 = time.perf_counter()
    rows = [{**p, **trivial(**p)} for p in points]
    pd.DataFrame(rows)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        results = list(ex.map(_trivial_point, points))
    pd.DataFrame([{**p, **r} for p, r in zip(points, results)])
    t_pool = time.perf_counter() - t0
    print(f"baselines, {len(points)} points:")
    print(f"  plain loop -> DataFrame                          {t_loop:8.3f} s")
    print(f"  ProcessPoolExecutor({workers}).map -> DataFrame        {t_pool:8.3f} s  "
          f"({len(points) / t_pool:,.0f} points/s, pool start included)")


def run_sweep(nq, n: int, display: bool) -> tuple:
    ii, jj = grid(n)
    reset_peak()
    rss0 = rss_mb()
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    sw = nq.sweep(trivial, i=ii, j=jj)
    t_submit = time.perf_counter() - t0
    d = None
    if display:
        from naq_nb.notebook.widgets import GroupDisplay
        d = GroupDisplay(sw, publish=lambda bundle, update: None).show()
    sw.wait(timeout=3600)
    t_done = time.perf_counter() - t0
    df = sw.to_dataframe()
    t_df = time.perf_counter() - t0
    rss1, peak = rss_mb(), peak_mb()
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu_seconds().items()}
    assert len(df) == len(sw) and set(df.status) == {"succeeded"}, sw.summary()
    assert df["sum"].tolist() == [i + j for i in ii for j in jj]
    return sw, d, cpu, (t_submit, t_done, t_df, rss0, rss1, peak)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--execution", default="processes", choices=["processes", "threads"])
    mode = ap.add_mutually_exclusive_group()  # neither: nq.local's default (a worker process with process execution)
    mode.add_argument("--processes", action="store_const", const=True, help="nq.local(processes=True)")
    mode.add_argument("--worker-thread", dest="processes", action="store_const", const=False,
                      help="nq.local(processes=False): the worker in a thread of the notebook process")
    ap.add_argument("--display", action="store_true", help="follow the sweep with its live display")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-cached", action="store_true", help="skip the cached re-run")
    a = ap.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not a.no_baseline:
        baselines(a.points, a.workers)

    import pandas  # noqa: F401 - imported before the clock, as in a notebook that used it already
    import naq_nb as nq

    cluster = nq.local(workers=a.workers, store_dir=None, execution=a.execution, processes=a.processes)
    try:
        sw, d, cpu, (t_submit, t_done, t_df, rss0, rss1, peak) = run_sweep(nq, a.points, a.display)
        n = len(sw)
        print(f"nq.sweep of {n} points, nq.local(workers={a.workers}, execution={a.execution!r}, "
              f"processes={cluster.processes})"
              f"{' with its live display' if a.display else ''}:")
        print(f"  nq.sweep returned (validate, publish, record) {t_submit:8.2f} s  ({n / t_submit:,.0f} points/s)")
        print(f"  all points done                               {t_done:8.2f} s")
        print(f"  DataFrame ready (END TO END)                  {t_df:8.2f} s  ({n / t_df:,.0f} points/s)")
        print(f"  notebook process RSS: {rss0:,.0f} MiB before, {rss1:,.0f} MiB after (+{rss1 - rss0:,.0f}), "
              f"peak +{peak - rss0:,.0f} MiB")
        print("  CPU over the sweep: " + ", ".join(f"{k} {v:.2f} s ({v / n * 1e3:.2f} ms/point)"
                                                   for k, v in cpu.items()))
        if d is not None:
            print(f"  display: {d.renders} refreshes, {d.updates} bundles sent")
        if not a.no_cached:
            ii, jj = grid(a.points)
            t2 = time.perf_counter()
            again = nq.sweep(trivial, i=ii, j=jj)
            df2 = again.wait(timeout=600).to_dataframe()
            t_cached = time.perf_counter() - t2
            assert len(again.cached) == n and len(df2) == n
            print(f"  cached re-run -> DataFrame (0 jobs run)       {t_cached:8.2f} s")
    finally:
        cluster.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
