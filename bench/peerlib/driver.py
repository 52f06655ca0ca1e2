"""One library, one run: start its worker CLI, then e2e, results read back, latency and drain.

Run by ``bench/peers.py`` with the library's own interpreter (its venv), as
``python bench/peerlib/driver.py --lib huey --jobs N ...``; prints one JSON line
with the figures on stdout (everything else goes to stderr). The library's
module ``lib_<name>.py`` beside this file supplies a ``Bench`` class: the
worker command line and the calls a user makes one at a time (enqueue, wait
for a result, a non-blocking "is it done").

Clocks:
* e2e: first enqueue -> the last job's result is stored (``done`` polled every
  millisecond, so a library whose result wait sleeps longer is not charged for
  it here), jobs/s.
* readback: every result read back in submission order with the library's own
  blocking result call, total seconds (each value is checked).
* latency: enqueue one job, wait for its result with the library's own call,
  sequentially, warm worker: p50 / p99 ms. A wait that gives up after 10 s is
  counted (``latency_missed``) and left out of the samples; more than 5 % fails.
* drain: worker stopped, N jobs enqueued, worker started; from the first job
  done to the last one enqueued done, (N - 1) / seconds (the worker's
  start-up is not counted). Jobs still not done then are counted as late
  (``drain_late``) and waited for up to 60 s (``drain_all_s``: first done ->
  all done; ``drain_lost``: still not done then).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # `peerlib.procs` from the bench directory
from peerlib.procs import start_group, stop_group  # noqa: E402

EXPECTED = 1  # every task returns this; each read-back value is checked against it
POLL = 0.001  # the phase clocks poll `done` this often
LATE_WAIT = 60.0  # drain: how long jobs still not done after the last one enqueued are waited for
LATENCY_TIMEOUT = 10.0  # a latency call that takes longer is counted as missed, not as a sample


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


class Workers:
    """The library's worker CLI as one process group; its pgid is appended to ``pidfile``."""

    def __init__(self, bench: Any, pidfile: str | None, logdir: str) -> None:
        self.bench, self.pidfile, self.logdir = bench, pidfile, logdir
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def start(self) -> None:
        self.count += 1
        logf = open(Path(self.logdir) / f"worker{self.count}.log", "wb")
        env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        argv = self.bench.worker_argv(str(Path(sys.executable).parent))
        log("  worker:", " ".join(argv))
        self.proc = start_group(argv, cwd=str(HERE), env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        logf.close()
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{self.proc.pid}\n")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.tail()}")

    def tail(self) -> str:
        p = Path(self.logdir) / f"worker{self.count}.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=getattr(self.bench, "stop_grace", 15.0),
                       sig=getattr(self.bench, "stop_signal", signal.SIGTERM))
            self.proc = None


async def call(fn: Any, *a: Any) -> Any:
    """The adapters are written in each library's own style: sync or async calls."""
    r = fn(*a)
    return await r if inspect.isawaitable(r) else r


async def wait_done(bench: Any, handle: Any, workers: Workers, timeout: float = 120.0) -> float:
    """Poll ``bench.done(handle)`` every POLL seconds; the time it was first seen done."""
    deadline = time.perf_counter() + timeout
    while not await call(bench.done, handle):
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"job not done after {timeout} s")
        workers.check()
        await asyncio.sleep(POLL)
    return time.perf_counter()


async def warm_up(bench: Any, workers: Workers, n: int = 20) -> None:
    """The first job also tells that the worker is up (the timeout covers its start-up)."""
    first = await call(bench.enqueue)
    await wait_done(bench, first, workers, timeout=120)
    for h in [await call(bench.enqueue) for _ in range(n)]:
        await call(bench.result, h, 60)


async def phase_latency(bench: Any, rounds: int) -> dict:
    samples, missed = [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        h = await call(bench.enqueue)
        try:
            v = await call(bench.result, h, LATENCY_TIMEOUT)
        except Exception as e:  # each library has its own timeout error; counted and reported, not fatal
            missed += 1
            log(f"  latency: no result within {LATENCY_TIMEOUT:g} s ({type(e).__name__}: {e}); done now: "
                f"{await call(bench.done, h)}")
            if missed > max(2, rounds // 20):
                raise
            continue
        samples.append((time.perf_counter() - t) * 1000)
        if v != EXPECTED:
            raise AssertionError(f"latency job returned {v!r}")
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[max(0, int(len(samples) * 0.99) - 1)],
            "latency_missed": missed}


async def phase_e2e(bench: Any, n: int, workers: Workers) -> tuple[float, list]:
    t0 = time.perf_counter()
    handles = [await call(bench.enqueue) for _ in range(n)]
    t1 = await wait_done(bench, handles[-1], workers, timeout=600)
    return n / (t1 - t0), handles


async def phase_readback(bench: Any, handles: list) -> float:
    t0 = time.perf_counter()
    values = [await call(bench.result, h, 60) for h in handles]
    dt = time.perf_counter() - t0
    wrong = sum(1 for v in values if v != EXPECTED)
    if wrong:
        raise AssertionError(f"{wrong} of {len(values)} results were not {EXPECTED!r}")
    return dt


async def first_done(bench: Any, handles: list, workers: Workers, timeout: float = 120.0) -> float:
    """When the first of ``handles`` is seen done (polled every POLL seconds)."""
    deadline = time.perf_counter() + timeout
    while True:
        for h in handles:
            if await call(bench.done, h):
                return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"none of {len(handles)} jobs done after {timeout} s")
        workers.check()
        await asyncio.sleep(POLL)


async def phase_drain(bench: Any, n: int, workers: Workers) -> dict:
    workers.stop()
    await asyncio.sleep(1.0)  # the broker notices the closed connections of the stopped worker
    handles = [await call(bench.enqueue) for _ in range(n)]
    ts = time.perf_counter()
    workers.start()
    # Any of the first ten: a message held by a pull request of the stopped worker must not
    # make the start look late.
    t0 = await first_done(bench, handles[:10], workers)
    t1 = await wait_done(bench, handles[-1], workers, timeout=600)
    late = [h for h in handles if not await call(bench.done, h)]
    t_all, lost = t1, 0
    for h in late:  # e.g. redelivered after an ack wait: counted apart, so the rate stays the steady one
        try:
            t_all = await wait_done(bench, h, workers, timeout=max(1.0, t1 + LATE_WAIT - time.perf_counter()))
        except TimeoutError:
            lost += 1
    log(f"  drain: first job done {t0 - ts:.2f} s after the worker start, last enqueued {t1 - ts:.2f} s, "
        f"all {t_all - ts:.2f} s ({len(late)} late, {lost} not done {LATE_WAIT:g} s later)")
    late_set = {id(h) for h in late}
    for h in [h for h in handles if id(h) not in late_set][:: max(1, n // 20)]:  # a sample: they really ran
        if await call(bench.result, h, 60) != EXPECTED:
            raise AssertionError("a drained job has a wrong result")
    return {"drain_per_s": (n - 1) / max(t1 - t0, 1e-9), "drain_late": len(late), "drain_all_s": t_all - t0,
            "drain_lost": lost}


async def run(args: argparse.Namespace, workers_box: list) -> dict:
    mod = importlib.import_module(f"lib_{args.lib}")
    bench = mod.Bench()
    logdir = tempfile.mkdtemp(prefix=f"bench-{args.lib}-")
    workers = Workers(bench, args.pidfile, logdir)
    workers_box.append(workers)
    await call(bench.open)
    try:
        workers.start()
        await warm_up(bench, workers)
        log(f"  {args.lib}: worker warm")
        out: dict[str, Any] = {"lib": args.lib, "version": mod.version(), "notes": bench.notes}
        out["e2e_per_s"], handles = await phase_e2e(bench, args.jobs, workers)
        out["readback_s"] = await phase_readback(bench, handles)
        del handles
        out.update(await phase_latency(bench, args.latency_rounds))
        out.update(await phase_drain(bench, args.jobs, workers))
        return out
    except BaseException:
        log(f"  {args.lib}: worker log tail:\n{workers.tail()}")
        raise
    finally:
        workers.stop()
        await call(bench.close)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--latency-rounds", type=int, default=200)
    ap.add_argument("--pidfile", default=None, help="append the worker process-group ids here")
    args = ap.parse_args()
    # SIGTERM from the bench: unwind through the finally blocks, which stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    workers_box: list[Workers] = []
    try:
        out = asyncio.run(run(args, workers_box))
    finally:
        for w in workers_box:
            w.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
