"""Fixtures: real nats-server processes (started through naq_nb's own EmbeddedServer), workers.

Every test gets its own server on a free port with its own store directory.
"""

from __future__ import annotations

import asyncio
import time
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from naq_nb.core.broker import Broker
from naq_nb.core.server import EmbeddedServer
from naq_nb.core.settings import Settings
from naq_nb.core.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _naq_local_dir(tmp_path_factory, monkeypatch):
    # nq.local()'s default store is per user and folder, kept across runs: each test gets its own.
    monkeypatch.setenv("NAQ_LOCAL_DIR", str(tmp_path_factory.mktemp("naq-local")))


@pytest.fixture
def nats_server(tmp_path):
    srv = EmbeddedServer(store_dir=tmp_path / "js")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def settings(nats_server) -> Settings:
    return Settings.from_env(environ={}, nats_url=nats_server.url, ack_wait=5.0, heartbeat_interval=1.0)


@pytest.fixture
async def broker(settings):
    b = await Broker.connect(settings=settings)
    await b.ensure_layout()
    yield b
    await b.close()


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


@pytest.fixture
async def start_worker(settings):
    """``w = await start_worker(queues, concurrency=...)``: a worker on the test's loop."""
    services = Services()

    async def _start(queues="default", **kw) -> Worker:
        return await services.start(Worker(queues, settings=kw.pop("settings", settings), **kw))

    yield _start
    await services.stop_all(graceful=False)


def worker_process(url: str, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """A ``naq worker`` in its own process (for SIGKILL tests)."""
    e = {**os.environ, "NAQ_NATS_URL": url, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "worker", *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


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


@pytest.fixture
def no_cluster_left():
    """Stops whatever ``nq.local()`` cluster a test left running."""
    yield
    from naq_nb.notebook import local as local_mod
    c = local_mod._current
    if c is not None:
        c.stop()
