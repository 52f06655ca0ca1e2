"""Plain helpers shared by the tests (fixtures live in conftest.py): paths, bounded waits,
services on the test's loop, a worker in its own process.

Import them by name: ``from helpers import ROOT, eventually, wait_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

__all__ = [
    "ROOT", "FakeClock", "Services", "connect_when_clustered", "eventually", "failed_entries", "good_meta",
    "pid_gone", "wait_until",
    "wire_message", "worker_process",
]

ROOT = Path(__file__).resolve().parent.parent


class Services:
    """Runs services (Worker, Scheduler) on the test's loop until ``stop_all``."""

    def __init__(self) -> None:
        self.running: list[tuple[object, asyncio.Task]] = []

    async def start(self, svc):
        task = asyncio.ensure_future(svc.run())
        while svc.started is None or not svc.started.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        self.running.append((svc, task))
        return svc

    async def stop_all(self, graceful: bool) -> None:
        for svc, task in self.running:
            svc.request_stop(graceful=graceful)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)


def worker_process(url: str, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """A ``naq worker`` in its own process (for SIGKILL tests); it inherits the test's ``NAQ_PREFIX``."""
    e = {**os.environ, "NAQ_NATS_URL": url, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "worker", *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def all_threads_stopped(pid: int) -> bool:
    """Every thread of process ``pid`` is stopped (a SIGSTOP takes effect asynchronously)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[0] == "T" for t in tasks)


def pid_gone(pid: int) -> bool:
    """Process ``pid`` has ended (a zombie its parent has not reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def eventually(pred, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """Await ``pred()`` until it is truthy (returned); fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def dead_lettered(broker, job_ids, timeout: float = 30.0) -> dict[str, str]:
    """The failed-stream reasons by job id once every one of ``job_ids`` is dead-lettered."""
    from naq_nb.core.failed import list_failed

    async def all_in():
        reasons = {r["job_id"]: r["reason"] for r in await list_failed(broker)}
        return reasons if all(j in reasons for j in job_ids) else None

    return await eventually(all_in, timeout, f"{len(job_ids)} jobs dead-lettered")


def wait_until(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> object:
    """Poll a local condition until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def good_meta(job_id: str, **over) -> dict:
    """A valid Naq-Meta header record for ``job_id`` (``over`` replaces fields)."""
    meta = {"v": 1, "id": job_id, "q": "default", "fn": "jobs.mark", "ser": "pickle", "ts": time.time(),
            "retry": {"max_retries": 0, "backoff": "fixed", "delay": 0.0, "max_delay": 3600.0, "jitter": 0.0,
                      "retry_on": []}, "timeout": None, "deps": [], "rttl": None, "name": None}
    meta.update(over)
    return meta


class FakeClock:
    """A clock for throttles: ``now`` moves only by ``advance``, which fires the timers due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn) -> None:
        self.timers.append((self.now + delay, fn))

    def advance(self, dt: float) -> None:
        """Move time on and fire the timers that are due (in order)."""
        self.now += dt
        due = sorted((t for t in self.timers if t[0] <= self.now), key=lambda t: t[0])
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, fn in due:
            fn()


async def failed_entries(broker, reason: str, n: int = 1) -> list[dict]:
    """The failed stream's entries whose reason contains ``reason``, once there are ``n`` (bounded: 30 s)."""
    from naq_nb.core.failed import list_failed

    for _ in range(600):
        rows = [r for r in await list_failed(broker) if reason in (r["reason"] or "")]
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} failed entries naming {reason!r}, got {await list_failed(broker)}")


async def wire_message(broker, queue: str, enqueue) -> tuple[dict, bytes]:
    """The job message ``enqueue()`` sends, as it went over the wire (a core subscription sees JetStream
    publishes): its headers and body."""
    sub = await broker.nc.subscribe(broker.layout.queue_subject(queue))
    await broker.nc.flush()
    await enqueue()
    msg = await sub.next_msg(timeout=10)
    await sub.unsubscribe()
    return dict(msg.headers), msg.data


async def connect_when_clustered(settings):
    """A fresh cluster elects its JetStream meta leader first: the layout can be made after that."""
    from naq_nb.core.broker import Broker
    from naq_nb.core.errors import NaqConnectionError

    end = time.monotonic() + 60
    while True:
        try:
            broker = await Broker.connect(settings=settings)
            await broker.ensure_layout()
            return broker
        except NaqConnectionError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)
