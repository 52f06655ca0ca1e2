"""naq_nb beside its peers, in one run, through the API people call one job at a time.

For each library the same job set: a no-op task returning 1, total worker
concurrency 10 in the library's own worker CLI, and four phases (see
``peerlib/driver.py`` for the clocks): e2e (N jobs enqueued one call at a time,
first enqueue -> last done), results read back one by one, submit -> result
latency with a warm worker, and drain (queue filled first, then the worker
started). The raw nats-py ceiling is measured in the same run. The task is
each library's natural one: sync for huey, dramatiq, rq and celery, async for
taskiq, saq and arq. naq_nb runs both: ``naq_nb`` a sync no-op (in one of the
worker's job processes, its default for sync code) and ``naq_nb_async`` an
async one (on the worker's loop, as the async peers run theirs).

The bench starts everything itself and stops it by PID at the end, also on
Ctrl-C or an error: Debian's ``redis-server`` on a free loopback port (a
temporary directory, no persistence; FLUSHALL before each library), a fresh
embedded nats-server for each NATS-based measurement, and each library's
worker CLI. Every peer lives in its own venv under ``bench/.venvs/<name>``
(gitignored), created here with pip on first use; naq_nb and the raw
ceiling run with this interpreter.

Runs are interleaved (run 1 of every library, then run 2, ..., the order
rotated each time); the report gives medians: ``bench/PEERS.md``,
``bench/peers.png`` and the raw figures in ``bench/peers.json``.

Usage:
    python bench/peers.py                          # 10,000 jobs, 3 runs, every library
    python bench/peers.py --jobs 500 --runs 1      # a quick look
    python bench/peers.py --libs naq_nb,huey,raw_nats
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from peerlib.procs import RedisServer, live_members, start_group, stop_group  # noqa: E402
from peerlib.report import write_chart, write_markdown  # noqa: E402

# name -> pip requirements of its venv; None: this interpreter (the project's venv).
LIBS: dict[str, list[str] | None] = {
    "naq_nb": None,
    "naq_nb_async": None,  # an async no-op, run on the worker's loop (as taskiq's, saq's and arq's are)
    "naq_nb_sync": None,  # enqueue_sync / fetch_job_result_sync; not in the default set
    "huey": ["huey", "redis"],
    "dramatiq": ["dramatiq[redis]"],
    "taskiq": ["taskiq", "taskiq-redis"],
    "taskiq_nats": ["taskiq", "taskiq-nats"],
    "saq": ["saq[redis]", "typing_extensions"],  # saq 0.26 imports typing_extensions without requiring it
    "arq": ["arq"],
    "rq": ["rq"],
    "celery": ["celery[redis]"],
    "raw_nats": None,
}
NATS_LIBS = {"naq_nb", "naq_nb_async", "naq_nb_sync", "taskiq_nats", "raw_nats"}
DEFAULT_LIBS = [lib for lib in LIBS if lib != "naq_nb_sync"]
VENVS = BENCH / ".venvs"


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def ensure_venv(lib: str) -> str:
    """The interpreter for ``lib``: its venv, created and filled with pip when missing or stale."""
    reqs = LIBS[lib]
    if reqs is None:
        return sys.executable
    venv = VENVS / lib
    py = venv / "bin" / "python"
    marker = venv / ".bench-reqs"
    want = "\n".join(reqs)
    if py.exists() and marker.exists() and marker.read_text() == want:
        return str(py)
    log(f"[venv] {lib}: creating {venv} with {' '.join(reqs)}")
    VENVS.mkdir(parents=True, exist_ok=True)
    logfile = VENVS / f"{lib}.log"
    with open(logfile, "wb") as f:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, stdout=f, stderr=f)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *reqs], stdout=f, stderr=f)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(reqs)} failed; see {logfile}")
    marker.write_text(want)
    return str(py)


class Bench:
    """The servers and the driver processes of one bench run; ``close()`` stops all of them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis: RedisServer | None = None
        self.live: list[subprocess.Popen] = []  # driver process groups running now
        self.pidfile = tempfile.NamedTemporaryFile(prefix="bench-peers-", suffix=".pids", delete=False).name

    def _nats(self):
        from naq_nb import EmbeddedServer
        return EmbeddedServer().start()

    def _run(self, argv: list[str], env: dict, timeout: float) -> dict:
        proc = start_group(argv, env=env, stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL, text=True)
        self.live.append(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no answer within {timeout:.0f} s") from None
        finally:
            stop_group(proc, grace=30)  # on success it has exited already; this also reaps it
            self.live.remove(proc)
            self._kill_listed()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"exited with {proc.returncode}")
        return json.loads(lines[-1])

    def _kill_listed(self) -> None:
        """Worker groups a driver started and did not stop (it was killed, or timed out)."""
        try:
            pgids = [int(x) for x in Path(self.pidfile).read_text().split()]
        except (OSError, ValueError):
            pgids = []
        for pgid in pgids:
            if not live_members(pgid):  # the normal case: the driver stopped it
                continue
            try:
                os.killpg(pgid, signal.SIGKILL)
                log(f"[bench] killed left-over worker group {pgid}")
            except ProcessLookupError:
                pass
        if pgids:
            Path(self.pidfile).write_text("")

    def measure(self, lib: str, python: str) -> dict:
        a = self.args
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_RQ_FORK": "1" if a.rq_fork else "0"}
        timeout = 600 + a.jobs * 0.3
        nats = self._nats() if lib in NATS_LIBS else None
        try:
            if nats is not None:
                env["BENCH_NATS_URL"] = nats.url
            if lib != "raw_nats":
                assert self.redis is not None
                self.redis.flushall()
                env["BENCH_REDIS_URL"] = self.redis.url
            if lib == "raw_nats":
                argv = [python, str(BENCH / "peerlib" / "raw_nats.py"), "--url", nats.url, "--jobs", str(a.jobs),
                        "--rounds", str(a.latency_rounds)]
            else:
                argv = [python, str(BENCH / "peerlib" / "driver.py"), "--lib", lib, "--jobs", str(a.jobs),
                        "--latency-rounds", str(a.latency_rounds), "--pidfile", self.pidfile]
            out = self._run(argv, env, timeout)
            if nats is not None:
                out["server"] = f"nats-server {nats.info.get('version', '?')}"
            return out
        finally:
            if nats is not None:
                nats.stop()

    def close(self) -> None:
        for proc in list(self.live):
            stop_group(proc, grace=30)  # SIGTERM: the driver stops its workers on the way out
        self.live.clear()
        self._kill_listed()
        Path(self.pidfile).unlink(missing_ok=True)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def medians(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    keys = sorted({k for r in ok for k, v in r.items() if isinstance(v, (int, float))})
    out = {k: statistics.median(r[k] for r in ok if k in r) for k in keys}
    out["runs_ok"], out["runs"] = len(ok), len(runs)
    out["errors"] = [r["error"] for r in runs if "error" in r]
    for r in ok:
        for k in ("version", "notes", "server"):
            if r.get(k) is not None:
                out.setdefault(k, r[k])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10000, help="jobs per phase (default 10000)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs; the report gives medians (default 3)")
    ap.add_argument("--libs", default=",".join(DEFAULT_LIBS),
                    help=f"comma-separated, from: {','.join(LIBS)} (default all but naq_nb_sync)")
    ap.add_argument("--latency-rounds", type=int, default=None,
                    help="sequential submit -> result samples (default min(200, jobs/5))")
    ap.add_argument("--rq-fork", action="store_true", help="rq's default forking worker instead of SimpleWorker")
    ap.add_argument("--out", default=str(BENCH), help="directory for PEERS.md, peers.png, peers.json (default bench/)")
    ap.add_argument("--note", default="", help="a line added to the report (e.g. 'loaded machine')")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: write PEERS.md and peers.png again from peers.json in --out")
    args = ap.parse_args(argv)
    args.libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    unknown = [x for x in args.libs if x not in LIBS]
    if unknown:
        ap.error(f"--libs: unknown {', '.join(unknown)}; choose from {', '.join(LIBS)}")
    if args.jobs < 20:
        ap.error("--jobs: at least 20")
    if args.runs < 1:
        ap.error("--runs: at least 1")
    if args.latency_rounds is None:
        args.latency_rounds = min(200, max(20, args.jobs // 5))
    return args


def rerender(out: Path) -> int:
    data = json.loads((out / "peers.json").read_text())
    write_markdown(out / "PEERS.md", data["summary"], data["runs"], data["meta"])
    write_chart(out / "peers.png", data["summary"], data["meta"])
    log(f"[bench] wrote {out / 'PEERS.md'} and {out / 'peers.png'} from {out / 'peers.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return rerender(Path(args.out))
    started, load_start = time.time(), os.getloadavg()
    pythons: dict[str, str] = {}
    results: dict[str, list[dict]] = {lib: [] for lib in args.libs}
    for lib in args.libs:
        try:
            pythons[lib] = ensure_venv(lib)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            log(f"[venv] {lib}: {e}; left out")
            results[lib].append({"error": f"not installed: {e}"})
    bench = Bench(args)
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    redis_version = "?"
    try:
        if any(lib != "raw_nats" for lib in pythons):
            bench.redis = RedisServer().start()
            redis_version = bench.redis.version()
        order = [lib for lib in args.libs if lib in pythons]
        for run in range(args.runs):
            rotated = order[run % len(order):] + order[:run % len(order)] if order else []
            for lib in rotated:
                log(f"[run {run + 1}/{args.runs}] {lib}")
                t = time.time()
                try:
                    r = bench.measure(lib, pythons[lib])
                except RuntimeError as e:
                    log(f"[run {run + 1}/{args.runs}] {lib} failed: {e}")
                    r = {"error": str(e)}
                log(f"[run {run + 1}/{args.runs}] {lib} ({time.time() - t:.0f} s): {json.dumps(r)}")
                results[lib].append(r)
    except KeyboardInterrupt:
        log("[bench] interrupted: stopping everything it started")
        bench.close()
        return 130
    finally:
        bench.close()
    summary = {lib: medians(runs) for lib, runs in results.items()}
    meta = {"args": vars(args), "argv": sys.argv[1:], "started": started, "duration_s": time.time() - started,
            "redis": redis_version, "load_start": load_start, "load_end": os.getloadavg()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1))
    write_markdown(out / "PEERS.md", summary, results, meta)
    write_chart(out / "peers.png", summary, meta)
    log(f"[bench] done in {time.time() - started:.0f} s: {out / 'PEERS.md'}, {out / 'peers.png'}")
    print((out / "PEERS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
