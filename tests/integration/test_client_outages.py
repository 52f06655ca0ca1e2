"""The client's calls while its server is away: each ends within its bound (the call's own timeout,
or ``NAQ_CONNECT_TIMEOUT`` for a reconnect), names the outage, and works again once the server is back."""

from __future__ import annotations

import time

import pytest

import jobs
from naq_nb import Queue
from naq_nb.client.client import Client
from naq_nb.core import broker as broker_mod
from naq_nb.core.errors import NaqConnectionError


@pytest.fixture
def client(settings, monkeypatch):
    monkeypatch.setattr(broker_mod, "REQUEST_TIMEOUT", 1.0)  # JetStream's request bound, 10 s otherwise
    c = Client(settings=settings.with_(publish_timeout=1.0))
    yield c
    try:
        c.close_sync()
    except NaqConnectionError:
        pass  # what the outage left: each test checks its own


def _timed(fn):
    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:  # handed back: the test checks its type and message
        return exc, time.monotonic() - t0
    raise AssertionError("the call returned while the server was down")


def test_reads_while_the_server_is_down_end_within_their_bound_and_name_it(client, own_nats_server, nats_server):
    job = Queue("nobody", client=client).enqueue_sync(jobs.add, 1, 2)
    client.flush_sync()
    nats_server.kill()
    for label, call, bound in [
        ("result(timeout=2)", lambda: client.result_sync(job.job_id, timeout=2), 3.5),
        ("result(timeout=0)", lambda: client.result_sync(job.job_id, timeout=0), 1.5),
        ("status", lambda: client.status_sync(job.job_id), 2.5),  # a request's bound: 1 s here
    ]:
        exc, took = _timed(call)
        assert isinstance(exc, NaqConnectionError), f"{label}: {type(exc).__name__}: {exc}"
        assert isinstance(exc, TimeoutError), label  # `except TimeoutError` callers still catch it
        assert "NATS" in str(exc) and str(nats_server.port) in str(exc), f"{label}: {exc}"
        assert took < bound, f"{label} took {took:.1f}s"
    nats_server.restart()
    assert client.status_sync(job.job_id)["status"] == "queued"  # reconnected: reads work again
