"""Shared fixtures for the notebook-client tests: a default client on the test's server,
workers in a background thread (as ``nq.local()`` runs them), and a bounded wait.

Import the fixtures into a test module: ``from nb_helpers import nb_client, thread_worker, wait_until``.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest

from naq_nb.client.client import Client
from naq_nb.client.session import set_default_client
from naq_nb.core.worker import Worker
from naq_nb.notebook.local import ServiceThread

__all__ = ["nb_client", "thread_worker", "wait_until"]


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


@pytest.fixture
def nb_client(nats_server, settings):
    """A client on the test's server, set as the session's default (``nq.submit`` uses it)."""
    c = Client(nats_server.url, settings=settings)
    set_default_client(c)
    yield c
    set_default_client(None)
    c.close_sync()


@pytest.fixture
def thread_worker(settings):
    """``thread_worker(queues="default", concurrency=4)``: a Worker on its own loop in a thread."""
    threads: list[ServiceThread] = []

    def _start(queues="default", concurrency: int = 4, **kw) -> Worker:
        w = Worker(queues, settings=settings, concurrency=concurrency, grace_period=2.0, **kw)
        threads.append(ServiceThread(w, "naq-test-worker").start(30.0))
        return w

    yield _start
    for t in threads:
        t.stop(5.0)
