"""Fault scenarios against real nats-server and `naq worker` processes; writes bench/RELIABILITY.md.

    python bench/reliability.py [--quick] [--only storm,server,...] [--out bench/RELIABILITY.md]

Each scenario runs jobs through the public API while faults are injected (SIGKILL of
workers, of the server, of one node of a 3-node cluster, of the scheduler leader;
poison jobs that segfault, exit or hang) and reports: jobs, faults injected, jobs
lost (never got a result), executions beyond the first (allowed under at-least-once
when a worker dies mid-job), results written twice (never allowed), and recovery
time. The script exits 1 if any scenario loses a job, writes a result twice, or
leaves a fault without a clear end state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from naq_nb.core.broker import Broker  # noqa: E402
from naq_nb.core.queue import Queue  # noqa: E402
from naq_nb.core.results import get_result, wait_for_result  # noqa: E402
from naq_nb.core.schedules import make_schedule, save_schedule  # noqa: E402
from naq_nb.core.server import EmbeddedServer, start_cluster  # noqa: E402
from naq_nb.core.settings import Settings  # noqa: E402

import reljobs  # noqa: E402


@dataclass
class Outcome:
    scenario: str
    jobs: int
    faults: str
    lost: int
    run_twice: int
    completed_twice: int
    recovery_s: float | None
    ok: bool
    note: str = ""


class Fleet:
    """`naq worker` processes that can be SIGKILLed and replaced."""

    def __init__(self, url: str, workdir: Path, concurrency: int = 4, extra_env: dict | None = None) -> None:
        self.env = {**os.environ, "NAQ_NATS_URL": url, "NAQ_ACK_WAIT": "2", "NAQ_HEARTBEAT": "1",
                    "PYTHONPATH": f"{ROOT}:{BENCH}", **(extra_env or {})}
        self.concurrency = concurrency
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.started_at: dict[int, float] = {}
        self.deaths = 0

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            log = open(self.workdir / f"worker-{len(self.procs)}.log", "wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "naq_nb.cli.main", "worker", "-c", str(self.concurrency)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            self.started_at[self.procs[-1].pid] = time.monotonic()
            log.close()

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def kill_one(self) -> None:
        """SIGKILL a worker that has been up long enough to be running jobs."""
        settled = [p for p in self.alive() if time.monotonic() - self.started_at[p.pid] > 1.5]
        victim = random.choice(settled or self.alive())
        victim.send_signal(signal.SIGKILL)
        victim.wait()

    def replace_dead(self) -> None:
        """Restart workers that died on their own (as a process supervisor would)."""
        for p in list(self.procs):
            if p.poll() is not None and p.returncode != -signal.SIGKILL:
                self.deaths += 1
                self.procs.remove(p)
                self.start()

    def stop(self) -> None:
        for p in self.alive():
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def executions(path: Path) -> Counter:
    return Counter(path.read_text().split()) if path.exists() else Counter()


@dataclass
class Writes:
    """Puts made on the results bucket, and the keys they left (one kept per key: history 1)."""

    total: int
    keys: int


async def result_writes(broker: Broker) -> Writes:
    lay = broker.layout
    info = await broker.js.stream_info(lay.kv_stream(lay.results_bucket))
    return Writes(info.state.last_seq, info.state.messages)


async def results_stored(broker: Broker) -> int:
    lay = broker.layout
    info = await broker.js.stream_info(lay.kv_stream(lay.results_bucket))
    return info.state.messages


async def wait_results(broker: Broker, ids: list[str], timeout: float) -> dict[str, object]:
    """Each id's result record, or None if it has none within ``timeout``."""
    sem = asyncio.Semaphore(64)

    async def one(jid: str) -> object:
        async with sem:
            try:
                return await wait_for_result(broker, jid, timeout)
            except Exception:  # timeout or server gone: counted as lost by the caller
                return await _last_look(broker, jid)
    values = await asyncio.gather(*(one(j) for j in ids))
    return dict(zip(ids, values))


async def _last_look(broker: Broker, jid: str) -> object:
    with contextlib.suppress(Exception):
        return await get_result(broker, jid)
    return None


async def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def connect(url: str, **settings: object) -> Broker:
    s = Settings.from_env(environ={}, nats_url=url, **settings)
    end = time.monotonic() + 30
    while True:
        try:
            b = await Broker.connect(settings=s)
            await b.ensure_layout()
            return b
        except Exception:  # a fresh cluster elects its JetStream leader first
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


async def enqueue_marks(broker: Broker, runs: Path, n: int, sleep: float, tag: str) -> list[str]:
    q = Queue(broker)
    jobs = await q.enqueue_many([(reljobs.mark, (str(runs), f"{tag}{i}", sleep), {}) for i in range(n)])
    return [j.job_id for j in jobs]


def tally(name: str, ids: list[str], got: dict, runs: Path, writes: Writes, faults: str,
          recovery: float | None, note: str = "") -> Outcome:
    done = [j for j in ids if got.get(j) is not None]
    ex = executions(runs)
    lost = len(ids) - len(done)
    twice = max(0, writes.total - writes.keys)  # a second put on a key replaced the first one
    again = sum(c - 1 for c in ex.values())
    unknown = writes.keys - len(done)
    if unknown > 0:  # e.g. an enqueue refused at the call (its ack lost with the server) that was stored after all
        note = f"{note}; {unknown} result(s) of jobs the producer was told were not stored".lstrip("; ")
    return Outcome(name, len(ids), faults, lost, again, twice, recovery, lost == 0 and twice == 0, note)


# --- scenarios --------------------------------------------------------------------

async def storm(tmp: Path, n: int, kills: int) -> Outcome:
    """SIGKILL a random worker every 0.7 s (and start a replacement) while jobs run."""
    with EmbeddedServer(store_dir=tmp / "js") as srv:
        broker = await connect(srv.url)
        fleet = Fleet(srv.url, tmp, concurrency=4)
        fleet.start(3)
        runs = tmp / "runs"
        try:
            ids = await enqueue_marks(broker, runs, n, 0.2, "s")
            await wait_for(lambda: _true(sum(executions(runs).values()) >= 8), 60, "workers to be busy")
            done_kills, last_kill = 0, time.monotonic()
            while done_kills < kills and await results_stored(broker) < n:
                await asyncio.sleep(0.7)
                fleet.kill_one()
                fleet.start()
                done_kills, last_kill = done_kills + 1, time.monotonic()
            got = await wait_results(broker, ids, 90)
            recovery = time.monotonic() - last_kill
            writes = await result_writes(broker)
        finally:
            fleet.stop()
            await broker.close()
    return tally("worker SIGKILL storm", ids, got, runs, writes, f"{done_kills} worker SIGKILLs", recovery)


async def _producer(q: Queue, runs: Path, stop: asyncio.Event, accepted: list, refused: list, hung: list) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            job = await asyncio.wait_for(q.enqueue(reljobs.mark, str(runs), f"p{i}", 0.01), 30)
            accepted.append(job.job_id)
        except asyncio.TimeoutError:
            hung.append(i)
        except Exception as exc:  # refused at the call: the caller knows, nothing silently lost
            refused.append(type(exc).__name__)
            await asyncio.sleep(0.05)


async def server_restart(tmp: Path, n: int) -> Outcome:
    """kill -9 the server mid-run (with enqueues in flight), restart it on the same port and store."""
    srv = EmbeddedServer(store_dir=tmp / "js").start()
    broker = await connect(srv.url)
    fleet = Fleet(srv.url, tmp, concurrency=4)
    fleet.start(2)
    runs = tmp / "runs"
    accepted, refused, hung = [], [], []
    stop = asyncio.Event()
    try:
        ids = await enqueue_marks(broker, runs, n, 0.02, "s")
        producer = asyncio.ensure_future(_producer(Queue(broker), runs, stop, accepted, refused, hung))
        await wait_for(lambda: _at_least(broker, n // 3), 60, "a third of the jobs")
        srv.kill()
        await asyncio.sleep(1.0)
        await asyncio.get_running_loop().run_in_executor(None, srv.restart)
        restarted = time.monotonic()
        before = await _stored_after_reconnect(broker)
        await wait_for(lambda: _at_least(broker, min(before + 1, n + len(accepted))), 60,
                       "the first result after the restart")
        recovery = time.monotonic() - restarted
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(producer, 60)
        got = await wait_results(broker, ids + accepted, 90)
        writes = await result_writes(broker)
    finally:
        stop.set()
        fleet.stop()
        await broker.close()
        srv.stop()
    note = f"{len(accepted)} enqueues during the fault accepted, {len(refused)} refused at the call, {len(hung)} hung"
    out = tally("server kill -9 + restart", ids + accepted, got, runs, writes, "1 server SIGKILL", recovery, note)
    out.ok = out.ok and not hung
    return out


async def _at_least(broker: Broker, k: int) -> bool:
    try:
        return await results_stored(broker) >= k
    except Exception:  # reconnecting
        return False


async def _stored_after_reconnect(broker: Broker) -> int:
    end = time.monotonic() + 30
    while True:
        try:
            return await results_stored(broker)
        except Exception:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


async def cluster_node_kill(tmp: Path, n: int) -> Outcome:
    """A 3-node cluster, streams and buckets with 3 replicas; SIGKILL one node mid-run."""
    nodes = start_cluster(tmp, name="naqrel")
    url = ",".join(node.url for node in nodes)
    broker = None
    fleet = Fleet(url, tmp, concurrency=4, extra_env={"NAQ_REPLICAS": "3"})
    runs = tmp / "runs"
    try:
        broker = await connect(url, replicas=3)
        fleet.start(2)
        ids = await enqueue_marks(broker, runs, n, 0.02, "c")
        await wait_for(lambda: _at_least(broker, n // 3), 60, "a third of the jobs")
        nodes[0].kill()
        killed = time.monotonic()
        before = await _stored_after_reconnect(broker)
        # (All jobs may have finished while the stream's leader moved: then there is nothing to wait for.)
        await wait_for(lambda: _at_least(broker, min(before + 1, n)), 120, "a result after the node died")
        recovery = time.monotonic() - killed
        got = await wait_results(broker, ids, 90)
        writes = await result_writes(broker)
    finally:
        fleet.stop()
        if broker is not None:
            await broker.close()
        for node in nodes:
            node.stop()
    return tally("3-node cluster, one node SIGKILL", ids, got, runs, writes, "1 node SIGKILL (of 3)", recovery)


def _scheduler(url: str, instance: str, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "NAQ_NATS_URL": url, "NAQ_SCHEDULER_LEASE": "3", "PYTHONPATH": f"{ROOT}:{BENCH}"}
    log = open(tmp / f"scheduler-{instance}.log", "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "scheduler", "--instance-id", instance],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


async def _leader(broker: Broker) -> str | None:
    kv = await broker.kv(broker.layout.leader_bucket)
    try:
        entry = await kv.get(broker.layout.leader_key)
    except Exception:  # no lease yet
        return None
    return entry.value.decode() if entry.value else None


async def scheduler_failover(tmp: Path, ticks_after: int) -> Outcome:
    """Two schedulers, a per-second schedule; SIGKILL the leader; every tick once."""
    seen: list[str] = []
    with EmbeddedServer(store_dir=tmp / "js") as srv:
        broker = await connect(srv.url)
        subject = broker.layout.queue_subject("ticks")

        async def note(msg) -> None:
            seen.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        sub = await broker.nc.subscribe(subject, cb=note)
        procs = {"A": _scheduler(srv.url, "A", tmp)}
        try:
            await wait_for(lambda: _is_leader(broker, "A"), 30, "scheduler A to lead")
            procs["B"] = _scheduler(srv.url, "B", tmp)
            job = Queue(broker, "ticks").make_job(reljobs.mark, (str(tmp / "unused"), "t"))
            s, body = make_schedule(job, broker, cron="* * * * * *")
            await save_schedule(broker, s, body)
            await wait_for(lambda: _true(len(set(seen)) >= 4), 30, "four ticks")
            dup_before = len(seen) - len(set(seen))
            procs["A"].send_signal(signal.SIGKILL)
            procs["A"].wait()
            killed, at_kill = time.monotonic(), len(set(seen))
            await wait_for(lambda: _true(len(set(seen)) > at_kill), 30, "a tick from the new leader")
            recovery = time.monotonic() - killed
            await wait_for(lambda: _true(len(set(seen)) >= at_kill + ticks_after), 60, "ticks after failover")
            for p in procs.values():  # no more ticks from here on
                p.terminate()
                p.wait(15)
            stored = await _stored_settled(broker, subject, seen)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(15)
            await sub.unsubscribe()
            await broker.close()
    return _tick_outcome(seen, stored, dup_before, recovery)


async def _stored_settled(broker: Broker, subject: str, seen: list[str], bound: float = 10.0) -> int:
    """The ticks the stream holds, once it holds every one the subscription saw (a subscriber can hear
    a publish before the stream has stored it), or what it holds after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        stored = (await broker.js.stream_info(broker.layout.jobs_stream, subjects_filter=subject)).state.messages
        if stored >= len(set(seen)) or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


async def _is_leader(broker: Broker, name: str) -> bool:
    return await _leader(broker) == name


def _tick_outcome(seen: list[str], stored: int, dup_before: int, recovery: float) -> Outcome:
    unique = sorted(set(seen), key=lambda i: int(i.rsplit("-", 1)[1]))
    dues = [int(i.rsplit("-", 1)[1]) for i in unique]
    expected = (dues[-1] - dues[0]) // 1000 + 1
    lost = expected - len(unique)
    twice = stored - len(unique)
    note = (f"{len(seen) - len(unique)} duplicate publishes in all ({dup_before} before the kill), "
            "dropped by JetStream de-dup" if len(seen) > len(unique) else "no duplicate publishes")
    return Outcome("scheduler leader SIGKILL, 1 s ticks", len(unique), "1 leader SIGKILL", lost, 0, twice,
                   recovery, lost == 0 and twice == 0 and dup_before == 0, note)


POISONS = [("segfault", reljobs.segfault, {}), ("os._exit", reljobs.hard_exit, {}),
           ("sys.exit", reljobs.sys_exit, {}), ("KeyboardInterrupt", reljobs.interrupt, {}),
           ("hung sync call", reljobs.hang, {"timeout": 1.0})]


async def poison(tmp: Path, n: int) -> Outcome:
    """Poison jobs among healthy ones: each poison ends failed with a reason, the rest succeed."""
    with EmbeddedServer(store_dir=tmp / "js") as srv:
        broker = await connect(srv.url)
        fleet = Fleet(srv.url, tmp, concurrency=2)
        fleet.start(2)
        runs = tmp / "runs"
        try:
            t0 = time.monotonic()
            poisoned = [(what, (await Queue(broker).configure(max_retries=1, **opts).enqueue(fn)).job_id)
                        for what, fn, opts in POISONS]
            ids = await enqueue_marks(broker, runs, n, 0.01, "h")
            watcher = asyncio.ensure_future(_supervise(fleet))
            got = await wait_results(broker, ids + [jid for _, jid in poisoned], 120)
            recovery = time.monotonic() - t0
            watcher.cancel()
            writes = await result_writes(broker)
        finally:
            fleet.stop()
            await broker.close()
    out = tally("poison jobs (segfault, exits, hang)", ids + [j for _, j in poisoned], got, runs, writes,
                f"{len(POISONS)} poison jobs", recovery)
    bad = [what for what, jid in poisoned if got.get(jid) is None or getattr(got[jid], "ok", True)]
    out.ok = out.ok and not bad
    out.note = (f"worker processes died: {fleet.deaths}; " +
                (f"poisons without a failed record: {', '.join(bad)}" if bad else "every poison ended failed"))
    return out


async def _supervise(fleet: Fleet) -> None:
    while True:
        fleet.replace_dead()
        await asyncio.sleep(0.2)


# --- report -----------------------------------------------------------------------

def report(outcomes: list[Outcome], quick: bool) -> str:
    ver = subprocess.run([_server_bin(), "--version"], capture_output=True, text=True).stdout.strip()
    lines = ["# Reliability scenarios", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, "
             f"Python {platform.python_version()}, {ver}, {'quick' if quick else 'full'} sizes "
             "(`make reliability`; `python bench/reliability.py` for full sizes).", "",
             "| scenario | jobs | faults injected | lost | extra runs | results written twice | recovery | verdict "
             "| notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        rec = "-" if o.recovery_s is None else f"{o.recovery_s:.2f} s"
        lines.append(f"| {o.scenario} | {o.jobs} | {o.faults} | {o.lost} | {o.run_twice} | {o.completed_twice} "
                     f"| {rec} | {'ok' if o.ok else 'FAILED'} | {o.note} |")
    lines += ["", "Extra runs are executions beyond the first: allowed under at-least-once when a worker dies "
              "mid-job. Lost jobs and results written twice are never allowed. Recovery: from the last fault "
              "to the first (server, node, leader) or last (storm, poison) completion after it."]
    return "\n".join(lines) + "\n"


def _server_bin() -> str:
    from naq_nb.core.server import find_server_binary
    return find_server_binary()


SCENARIOS = {
    "storm": lambda tmp, q: storm(tmp, 300 if q else 2000, 6 if q else 29),
    "server": lambda tmp, q: server_restart(tmp, 300 if q else 2000),
    "cluster": lambda tmp, q: cluster_node_kill(tmp, 300 if q else 2000),
    "scheduler": lambda tmp, q: scheduler_failover(tmp, 4 if q else 10),
    "poison": lambda tmp, q: poison(tmp, 100 if q else 1000),
}


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI sizes")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {list(SCENARIOS)}")
    ap.add_argument("--out", default=str(BENCH / "RELIABILITY.md"))
    args = ap.parse_args(argv)
    outcomes = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"naq-rel-{name}-", ignore_cleanup_errors=True) as tmp:
            t0 = time.monotonic()
            try:
                out = await SCENARIOS[name](Path(tmp), args.quick)
            except Exception as exc:  # a scenario that cannot finish is a failed scenario, reported as such
                out = Outcome(name, 0, "-", -1, 0, 0, None, False, f"did not finish: {type(exc).__name__}: {exc}")
            print(f"{out.scenario}: {'ok' if out.ok else 'FAILED'} in {time.monotonic() - t0:.1f}s "
                  f"(lost {out.lost}, extra runs {out.run_twice}, written twice {out.completed_twice}; {out.note})",
                  flush=True)
            outcomes.append(out)
    Path(args.out).write_text(report(outcomes, args.quick))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
