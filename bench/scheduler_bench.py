"""Scheduler figures on an embedded nats-server.

1. Lateness of 1,000 delayed jobs (due times spread over a few seconds): the time
   from each job's due time to its message reaching the queue subject, p50/p99/max;
   baseline in the same run: plain ``asyncio`` timers for the same due times.
2. 10,000 active schedules: time and memory to load them into a scheduler, the cost
   of an idle tick, and of a tick that fires 100, against 100 raw JetStream publishes.

Run: ``.venv/bin/python bench/scheduler_bench.py`` (``--delayed N --schedules N``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc

from naq_nb.core.broker import Broker
from naq_nb.core.envelope import HEADER_META
from naq_nb.core.queue import Queue
from naq_nb.core.scheduler import Scheduler
from naq_nb.core.schedules import make_schedule, save_schedule
from naq_nb.core.server import EmbeddedServer
from naq_nb.core.settings import Settings


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def noop() -> None:
    return None


async def timer_baseline(dues: list[float]) -> list[float]:
    late: list[float] = []

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.time()))
        late.append(time.time() - due)
    await asyncio.gather(*(one(d) for d in dues))
    return late


async def delayed_lateness(broker: Broker, settings: Settings, n: int) -> tuple[list[float], list[float]]:
    lay = broker.layout
    arrivals: dict[str, float] = {}
    done = asyncio.Event()

    async def on_msg(msg) -> None:
        meta = json.loads(msg.headers[HEADER_META])
        arrivals[meta["id"]] = time.time() - meta["due"]
        if len(arrivals) >= n:
            done.set()
    sub = await broker.nc.subscribe(lay.queue_subject("late"), cb=on_msg)
    sch = Scheduler(settings=settings, ha=False)
    task = asyncio.ensure_future(sch.run())
    start = time.time() + 3.0
    dues = [start + 3.0 * i / n for i in range(n)]
    q = Queue(broker, "late")
    for due in dues:
        s, body = make_schedule(q.make_job(noop), broker, when=due)
        await save_schedule(broker, s, body)
    base = asyncio.ensure_future(timer_baseline([d + 4.0 for d in dues]))
    await asyncio.wait_for(done.wait(), 60)
    baseline = await base
    sch.request_stop()
    await task
    await sub.unsubscribe()
    return list(arrivals.values()), baseline


async def many_schedules(broker: Broker, settings: Settings, n: int) -> dict:
    q = Queue(broker, "many")
    t0 = time.time()
    for i in range(n):
        s, body = make_schedule(q.make_job(noop), broker, interval=3600.0, now=t0 - 3600.0 + i * 0.01)
        await save_schedule(broker, s, body)
    create_s = time.time() - t0
    tracemalloc.start()  # memory on a first load (tracemalloc slows it), time on a second one
    probe = Scheduler(settings=settings, broker=broker, ha=False)
    await probe.prepare()
    mem = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    await probe._watcher.stop()
    del probe
    t = time.perf_counter()
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    idle_ticks = 1000
    for _ in range(idle_ticks):
        await sch.tick(t0 - 1.0)
    idle_us = (time.perf_counter() - t) / idle_ticks * 1e6
    t = time.perf_counter()
    fired = await sch.tick(t0 + 1.0 - 0.001)  # the first 100 schedules are due
    fire_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(len(fired)):
        await broker.js.publish(broker.layout.queue_subject("raw"), b"x")
    raw_s = time.perf_counter() - t
    await sch._watcher.stop()
    return dict(n=n, create_s=create_s, load_s=load_s, mem_mb=mem / 1e6, idle_us=idle_us, fired=len(fired),
                fire_ms=fire_s * 1e3, raw_ms=raw_s * 1e3)


async def main(args: argparse.Namespace) -> None:
    with EmbeddedServer() as srv:
        settings = Settings.from_env(environ={}, nats_url=srv.url)
        broker = await Broker.connect(settings=settings)
        await broker.ensure_layout()
        late, base = await delayed_lateness(broker, settings, args.delayed)
        ms = [x * 1e3 for x in late]
        bms = [x * 1e3 for x in base]
        print(f"delayed jobs: {len(ms)} fired; lateness p50 {statistics.median(ms):.2f} ms, "
              f"p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms, early {sum(1 for x in late if x < 0)}")
        print(f"  baseline asyncio timers: p50 {statistics.median(bms):.2f} ms, p99 {pct(bms, 99):.2f} ms "
              f"(naq/baseline p50 ratio {statistics.median(ms) / max(1e-6, statistics.median(bms)):.1f}x)")
        r = await many_schedules(broker, settings, args.schedules)
        print(f"{r['n']:,} active schedules: created in {r['create_s']:.1f} s, loaded by a scheduler in "
              f"{r['load_s']:.2f} s, peak Python memory while loading {r['mem_mb']:.1f} MB")
        print(f"  idle tick {r['idle_us']:.1f} us; a tick firing {r['fired']} took {r['fire_ms']:.1f} ms "
              f"({r['fire_ms'] / max(1, r['fired']):.2f} ms each) vs {r['raw_ms']:.1f} ms for as many raw "
              f"JetStream publishes (ratio {r['fire_ms'] / max(1e-6, r['raw_ms']):.1f}x)")
        await broker.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delayed", type=int, default=1000)
    ap.add_argument("--schedules", type=int, default=10000)
    asyncio.run(main(ap.parse_args()))
