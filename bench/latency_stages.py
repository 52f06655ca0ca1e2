"""Where one job's submit -> result time goes, stage by stage, through the public API.

What a user types, one job at a time with a warm worker (``naq worker bench -c 10``)::

    job = await Queue("bench").enqueue(noop)
    await fetch_job_result(job, timeout=10)

Both processes get time stamps (wall clock, same machine) at the stage boundaries:
the caller's enqueue and the job's write (on the caller's own loop, or handed to naq_nb's
loop thread); in the worker the
job message's arrival, the run's start, the job process call, the result and
status writes (both acknowledged) and the push to the client (sent as the writes go
out when the worker has no other job: then "writes acked" is the worker's view, and the
client holds the value once both acknowledgements reach it too); the push's arrival
in the client's inbox. Stamps are taken by wrapping those functions in
this bench only (``--stamp`` mode of this file in the worker process), so the
figures include the stamping's own few microseconds; the total is also measured
without it (``--plain``) for comparison.

The stages that are one NATS hop are printed beside that hop's floor, measured with
plain nats-py on the same server right after (``raw_hops``).

Usage: python bench/latency_stages.py [--jobs 500] [--async-job]
Figures are printed, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH / "peerlib"))

WARMUP = 20


def _wrap_async(cls: Any, name: str, key: str, job_id_of: Any, stamps: dict, start: bool = True,
                end: bool = True) -> None:
    """Stamp ``key0`` when ``cls.name`` is called and ``key1`` when it returns (either left out)."""
    original = getattr(cls, name)

    async def wrapped(self: Any, *a: Any, **k: Any) -> Any:
        jid = job_id_of(*a, **k)
        if start:
            stamps.setdefault(jid, {})[key + "0"] = time.time()
        try:
            return await original(self, *a, **k)
        finally:
            if end:
                stamps.setdefault(jid, {})[key + "1"] = time.time()

    setattr(cls, name, wrapped)


def stamped_worker(out: str, argv: list[str]) -> int:
    """The worker CLI with stage stamps; they are written to ``out`` when it stops."""
    import atexit

    from naq_nb.cli.main import main
    from naq_nb.core import procpool, puller, runner
    from naq_nb.core.envelope import decode_meta

    stamps: dict[str, dict[str, float]] = {}
    dispatch = puller.PullFeed._dispatch

    def on_feed(self: Any, msg: Any) -> None:
        if msg.headers and "Status" not in msg.headers:
            stamps.setdefault(decode_meta(msg.headers).job_id, {})["arrive"] = time.time()
        dispatch(self, msg)

    puller.PullFeed._dispatch = on_feed  # type: ignore[method-assign]
    _wrap_async(runner.JobRunner, "run", "run", lambda d: d.meta.job_id, stamps)
    if hasattr(runner, "send_final_writes"):  # sent from the slot, settled in the background
        _wrap_async(runner, "send_final_writes", "store", lambda jid, *a: jid, stamps, end=False)  # (broker, jid, ...)
        _wrap_async(runner, "settle_final_writes", "store", lambda jid, *a: jid, stamps, start=False)
    elif hasattr(runner, "store_result"):
        _wrap_async(runner, "store_result", "store", lambda jid, *a: jid, stamps)  # (broker, jid, ...)
    else:  # a tree before final_writes.py
        _wrap_async(runner.JobRunner, "_store_result", "store", lambda jid, *a: jid, stamps)
    _wrap_async(runner, "push_result", "push", lambda token, jid, *a: jid, stamps)  # (broker, token, jid, record)
    try:  # a lone job's result, pushed as its writes go out
        from naq_nb.core import final_writes

        _wrap_async(final_writes, "push_early", "push", lambda token, jid, *a: jid, stamps)
    except ImportError:  # a tree before it
        pass
    _wrap_async(procpool.ProcessPool, "call", "child", lambda child, jid, *a, **k: jid, stamps)
    atexit.register(lambda: Path(out).write_text(json.dumps(stamps)))
    return main(argv)


async def probe(url: str, n: int, stamp: bool, async_job: bool = False) -> dict[str, dict[str, float]]:
    from lib_naq_nb import anoop, noop

    fn = anoop if async_job else noop

    from naq_nb import Queue, fetch_job_result
    from naq_nb.client import client as client_mod, inbox

    seen: dict[str, dict[str, float]] = {}
    if stamp:
        publish = client_mod.publish_prepared
        deliver = inbox.ResultInbox.deliver

        async def on_publish(b: Any, job: Any, *a: Any, **k: Any) -> None:
            seen.setdefault(job.job_id, {})["sent"] = time.time()
            await publish(b, job, *a, **k)

        def on_push(self: Any, job_id: str, data: bytes) -> None:
            seen.setdefault(job_id, {})["inbox"] = time.time()
            deliver(self, job_id, data)

        direct = client_mod.publish_direct

        def on_direct(b: Any, acks: Any, job: Any, *a: Any, **k: Any) -> None:  # a caller on its own loop
            seen.setdefault(job.job_id, {})["sent"] = time.time()
            direct(b, acks, job, *a, **k)

        client_mod.publish_prepared = on_publish  # type: ignore[assignment]
        client_mod.publish_direct = on_direct  # type: ignore[assignment]
        inbox.ResultInbox.deliver = on_push  # type: ignore[method-assign]
    q = Queue("bench", nats_url=url)
    rows: dict[str, dict[str, float]] = {}
    for i in range(n + WARMUP):
        t0 = time.time()
        job = await q.enqueue(fn)
        t1 = time.time()
        await fetch_job_result(job, nats_url=url, timeout=10)
        t2 = time.time()
        if i >= WARMUP:
            rows[job.job_id] = {"t0": t0, "returned": t1, "done": t2, **seen.get(job.job_id, {})}
    return rows


STAGES = [
    # (label, from, to): "done" is the caller holding the value
    ("enqueue call returns", "t0", "returned"),
    ("caller -> job written", "t0", "sent"),
    ("sent -> worker has the message", "sent", "arrive"),
    ("message -> run starts", "arrive", "run0"),
    ("run start -> job process call", "run0", "child0"),
    ("job process round trip", "child0", "child1"),
    ("call returned -> writes start", "child1", "store0"),
    ("status + result written (acked)", "store0", "store1"),
    ("push sent -> client inbox", "push0", "inbox"),
    ("writes acked -> caller has value", "store1", "done"),
    ("writes start -> caller has value", "store0", "done"),
    ("total: submit -> value", "t0", "done"),
]


async def raw_hops(url: str, rounds: int = 300) -> dict[str, float]:
    """The floors of the stages that are one NATS hop, measured with plain nats-py on the same
    server (two connections of one process; the worker's hops cross processes, so they also pay a
    wake-up): a work-queue publish -> an open pull request's delivery, an acknowledged KV put's
    round trip, and a core publish -> a subscriber. p50s in ms."""
    import nats
    from nats.js import api

    pub, sub = await nats.connect(url), await nats.connect(url)
    js = pub.jetstream()
    await js.add_stream(api.StreamConfig(name="RAWQ", subjects=["rawq.>"], retention=api.RetentionPolicy.WORK_QUEUE))
    await js.add_stream(api.StreamConfig(name="RAWKV", subjects=["rawkv.>"], max_msgs_per_subject=1))
    await js.add_consumer("RAWQ", api.ConsumerConfig(durable_name="w", ack_policy=api.AckPolicy.EXPLICIT))
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_msg(m: Any) -> None:
        got.put_nowait(time.perf_counter())
        if m.data and m.reply:
            await m.ack()

    inbox = sub.new_inbox()
    await sub.subscribe(inbox + ".*", cb=on_msg)
    await sub.subscribe("rawcore", cb=on_msg)
    await sub.flush()
    lat: dict[str, list[float]] = {"pull": [], "put": [], "core": []}
    try:
        for i in range(rounds):
            await sub.publish("$JS.API.CONSUMER.MSG.NEXT.RAWQ.w", b'{"batch":1,"expires":5000000000}', f"{inbox}.{i}")
            await sub.flush()
            await asyncio.sleep(0.001)  # the pull request is open before the publish
            t0 = time.perf_counter()
            await pub.publish("rawq.q", b"x" * 300, headers={"Nats-Msg-Id": f"m{i}"}, reply=pub.new_inbox())
            await pub.flush()
            lat["pull"].append(await asyncio.wait_for(got.get(), 5) - t0)
            t0 = time.perf_counter()
            await js.publish(f"rawkv.{i}", b"y" * 300)
            lat["put"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await pub.publish("rawcore", b"z" * 300)
            await pub.flush()
            lat["core"].append(await asyncio.wait_for(got.get(), 5) - t0)
    finally:
        await pub.close()
        await sub.close()
    return {k: 1e3 * statistics.median(v[WARMUP:]) for k, v in lat.items()}


RAW_BESIDE = {  # stage label -> raw hop it is compared with
    "sent -> worker has the message": "pull",
    "status + result written (acked)": "put",
    "push sent -> client inbox": "core",
}


def report(rows: dict[str, dict[str, float]], worker: dict[str, dict[str, float]], raw: dict[str, float]) -> None:
    for label, a, b in STAGES:
        vals = []
        for jid, c in rows.items():
            s = {**worker.get(jid, {}), **c}
            if a in s and b in s:
                vals.append((s[b] - s[a]) * 1e3)
        if not vals:
            continue
        vals.sort()
        floor = f"   raw nats-py {raw[RAW_BESIDE[label]]:6.3f} ms" if label in RAW_BESIDE else ""
        print(f"  {label:34s} p50 {statistics.median(vals):6.3f} ms   p90 {vals[int(len(vals) * 0.9)]:6.3f} ms{floor}")


def run_once(url: str, n: int, stamp: bool, async_job: bool = False) -> tuple[dict, dict]:
    out = tempfile.mktemp(suffix=".json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH / "peerlib"), str(BENCH.parent)])}
    argv = ["--log-level", "WARNING", "worker", "bench", "-c", "10", "--nats-url", url]
    cmd = (
        [sys.executable, __file__, "--stamped-worker", out, *argv]
        if stamp
        else [sys.executable, "-m", "naq_nb.cli.main", *argv]
    )
    proc = subprocess.Popen(cmd, env=env)
    try:
        time.sleep(2.0)  # the worker starts its job processes; the warm-up jobs absorb the rest
        rows = asyncio.run(probe(url, n, stamp, async_job))
    finally:
        proc.terminate()
        proc.wait(30)
    worker = json.loads(Path(out).read_text()) if stamp and os.path.exists(out) else {}
    if os.path.exists(out):
        os.unlink(out)
    return rows, worker


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--stamped-worker":
        sys.exit(stamped_worker(sys.argv[2], sys.argv[3:]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--async-job", action="store_true", help="an async no-op (runs on the worker's loop)")
    args = ap.parse_args()
    from naq_nb.core.server import EmbeddedServer

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with EmbeddedServer() as srv:
        plain, _ = run_once(srv.url, args.jobs, stamp=False, async_job=args.async_job)
    with EmbeddedServer() as srv:
        rows, worker = run_once(srv.url, args.jobs, stamp=True, async_job=args.async_job)
        raw = asyncio.run(raw_hops(srv.url))
    total = sorted((r["done"] - r["t0"]) * 1e3 for r in plain.values())
    kind = "async no-op, on the worker's loop" if args.async_job else "no-op, in a job process"
    print(f"{args.jobs} jobs one at a time ({kind}), worker `naq worker bench -c 10` (processes):")
    print(
        f"  unstamped total: submit -> value   p50 {statistics.median(total):6.3f} ms   "
        f"p99 {total[int(len(total) * 0.99)]:6.3f} ms"
    )
    print("stamped run, by stage:")
    report(rows, worker, raw)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
