"""The raw nats-py ceiling: what bare JetStream calls do on the server the naq_nb run used.

Run by ``bench/peers.py`` with the project's interpreter against a fresh nats-server:
``python bench/peerlib/raw_nats.py --url nats://... --jobs N``; prints one JSON line.

* pub_sync_per_s: acknowledged publish, one ``await js.publish`` at a time.
* pub_async_per_s: ``js.publish_async`` for all N, then every acknowledgement awaited.
* pull_ack_per_s: a pre-filled stream drained by one pull consumer (batches of 256), ack each.
* pull_kv_per_s: the same, plus one KV put per message before its ack, 256 messages in flight.
* rt_p50_ms / rt_p99_ms: publish -> pull (a consumer loop on another connection) -> KV put ->
  the publisher sees the put through a KV watch; sequential round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import nats
from nats.errors import TimeoutError as NatsTimeout

PAYLOAD = b"x" * 256  # about the size of a naq_nb job message for a no-op


async def prefill(js, subject: str, n: int) -> None:
    futs = [await js.publish_async(subject, PAYLOAD) for _ in range(n)]
    await asyncio.gather(*futs)


async def pub_sync(js, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await js.publish("raw.sync", PAYLOAD)
    return n / (time.perf_counter() - t0)


async def pub_async(js, n: int) -> float:
    t0 = time.perf_counter()
    await prefill(js, "raw.async", n)
    return n / (time.perf_counter() - t0)


async def pull_ack(js, n: int) -> float:
    await prefill(js, "raw.pull", n)
    sub = await js.pull_subscribe("raw.pull", durable="pull_ack", stream="RAW")
    t0 = time.perf_counter()
    done = 0
    while done < n:
        msgs = await sub.fetch(256, timeout=10)
        for m in msgs:
            await m.ack()
        done += len(msgs)
    return n / (time.perf_counter() - t0)


async def pull_kv(js, n: int, in_flight: int = 256) -> float:
    await prefill(js, "raw.kv", n)
    kv = await js.create_key_value(bucket="raw_results", history=1)
    sub = await js.pull_subscribe("raw.kv", durable="pull_kv", stream="RAW")
    sem = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task] = set()

    async def handle(msg) -> None:
        try:
            await kv.put(f"r{msg.metadata.sequence.stream}", b"1")
            await msg.ack()
        finally:
            sem.release()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        msgs = await sub.fetch(256, timeout=10)
        for m in msgs:
            await sem.acquire()
            t = asyncio.ensure_future(handle(m))
            pending.add(t)
            t.add_done_callback(pending.discard)
        done += len(msgs)
    await asyncio.gather(*pending)
    return n / (time.perf_counter() - t0)


async def round_trip(url: str, rounds: int) -> tuple[float, float]:
    worker_nc, client_nc = await nats.connect(url), await nats.connect(url)
    wjs, cjs = worker_nc.jetstream(), client_nc.jetstream()
    wkv = await wjs.create_key_value(bucket="raw_rt", history=1)
    ckv = await cjs.key_value("raw_rt")
    sub = await wjs.pull_subscribe("raw.rt", durable="rt", stream="RAW")
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(1, timeout=1)
            except NatsTimeout:
                continue
            for m in msgs:
                await wkv.put(m.data.decode(), b"1")
                await m.ack()
    task = asyncio.ensure_future(worker())
    watcher = await ckv.watch("rt.>")
    assert await watcher.updates(timeout=10) is None  # the end-of-initial-values marker
    samples = []
    try:
        for i in range(rounds):
            key = f"rt.{i}"
            t = time.perf_counter()
            await cjs.publish("raw.rt", key.encode())
            while (e := await watcher.updates(timeout=10)) is None or e.key != key:
                pass
            samples.append((time.perf_counter() - t) * 1000)
    finally:
        stop.set()
        await task
        await watcher.stop()
        await worker_nc.close()
        await client_nc.close()
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    nc = await nats.connect(args.url)
    js = nc.jetstream()
    await js.add_stream(name="RAW", subjects=["raw.>"])
    from importlib.metadata import version
    out = {"lib": "raw_nats", "version": version("nats-py")}
    try:
        out["pub_sync_per_s"] = await pub_sync(js, args.jobs)
        out["pub_async_per_s"] = await pub_async(js, args.jobs)
        out["pull_ack_per_s"] = await pull_ack(js, args.jobs)
        out["pull_kv_per_s"] = await pull_kv(js, args.jobs)
        out["rt_p50_ms"], out["rt_p99_ms"] = await round_trip(args.url, args.rounds)
    finally:
        await nc.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
