"""Large data figures, printed (never asserted): a DataFrame into a job and back.

* ``nq.local(processes=False)``: the worker in a thread of the notebook process (client
  and worker share a process, so the reader takes the writer's bytes from memory);
* ``nq.local()``: a ``naq worker`` process (the default), every byte through the
  object store both ways (upload, worker download, result upload, client download);
* ``nq.put`` once, then a map of N jobs over the stored value.

Usage: python bench/large_data_bench.py [--mb 50] [--runs 3] [--points 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def frame(mb: int):
    import numpy as np
    import pandas as pd
    return pd.DataFrame(np.random.default_rng(1).random((mb * 1024 * 1024 // 64, 8)), columns=list("abcdefgh"))


def roundtrip(nq, df, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = nq.submit(lambda d: d * 2, df).result(timeout=600)
        out.append(time.perf_counter() - t0)
        assert res.shape == df.shape
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--points", type=int, default=200)
    a = ap.parse_args()
    import naq_nb as nq
    df = frame(a.mb)
    setups = (("worker thread (one process)", dict(workers=1, processes=False)), ("worker process", dict(workers=1)))
    for label, kw in setups:
        with nq.local(scheduler=False, **kw):
            times = roundtrip(nq, df, a.runs)
            print(f"{a.mb} MB DataFrame in and out of a job, {label}: median {statistics.median(times):.2f}s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
            if "processes" not in kw:
                t0 = time.perf_counter()
                ref = nq.put(df)
                t1 = time.perf_counter()
                futs = nq.map(lambda i, ref=ref: float(ref["a"].iloc[i]), range(a.points))
                [f.result(timeout=600) for f in futs]
                t2 = time.perf_counter()
                print(f"nq.put of {a.mb} MB: {t1 - t0:.2f}s; then {a.points} jobs over it: {t2 - t1:.2f}s")


if __name__ == "__main__":
    main()
