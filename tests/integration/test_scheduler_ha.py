"""Highly available scheduling with real processes: SIGKILL the leader, every tick still fires once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from nats.js.errors import KeyNotFoundError

from naq_nb.core.broker import Broker
from naq_nb.core.queue import Queue
from naq_nb.core.schedules import make_schedule, save_schedule
from naq_nb.core.settings import Settings

import jobs
from helpers import ROOT
from test_scheduler import queued_ids, wait_until

LEASE = 3.0


def scheduler_process(url: str, instance: str) -> subprocess.Popen:
    env = {**os.environ, "NAQ_NATS_URL": url, "NAQ_SCHEDULER_LEASE": str(LEASE),
           "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "scheduler", "--instance-id", instance],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def leader(broker: Broker) -> str | None:
    kv = await broker.kv(broker.layout.leader_bucket)
    try:
        entry = await kv.get(broker.layout.leader_key)
    except KeyNotFoundError:
        return None
    return entry.value.decode() if entry.value else None


async def test_leader_killed_every_tick_fires_exactly_once(nats_server, naq_prefix):
    # The scheduler processes take NAQ_PREFIX from the environment, where the fixture put naq_prefix.
    settings = Settings.from_env(environ={}, nats_url=nats_server.url, prefix=naq_prefix, leader_ttl=LEASE)
    broker = await Broker.connect(settings=settings)
    await broker.ensure_layout()
    procs = [scheduler_process(nats_server.url, "A")]
    try:
        await wait_until(lambda: _is(leader(broker), "A"), 20, "A to lead")
        procs.append(scheduler_process(nats_server.url, "B"))
        job = Queue(broker, "ha").make_job(jobs.add, (1, 2))
        s, body = make_schedule(job, broker, cron="* * * * * *")  # every second
        await save_schedule(broker, s, body)

        await wait_until(lambda: _count_at_least(broker, 3), 20, "three ticks fired by A")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        killed_at = time.monotonic()
        await wait_until(lambda: _is(leader(broker), "B"), 20, "B to take over")
        takeover = time.monotonic() - killed_at
        before = len(await queued_ids(broker, "ha"))
        await wait_until(lambda: _count_at_least(broker, before + 3), 20, "three ticks fired by B")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
    ids = await queued_ids(broker, "ha")
    await broker.close()
    dues = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert len(ids) == len(set(ids)), "an occurrence was published twice"
    assert sorted(dues) == dues
    gaps = {b - a for a, b in zip(dues, dues[1:])}
    assert gaps == {1000}, f"ticks lost or doubled across the failover: gaps {sorted(gaps)} ms"
    # The lease is the bound: another scheduler leads within its TTL (plus a one-second try).
    assert takeover < LEASE + 2.5, f"takeover took {takeover:.1f}s"


async def _is(coro, value) -> bool:
    return (await coro) == value


async def _count_at_least(broker, n: int) -> bool:
    return len(await queued_ids(broker, "ha")) >= n
