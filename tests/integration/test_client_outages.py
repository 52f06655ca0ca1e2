"""The client's calls while its server is away: each ends within its bound (the call's own timeout,
or ``NAQ_CONNECT_TIMEOUT`` for a reconnect), names the outage, and works again once the server is back."""

from __future__ import annotations

import shutil
import time

import pytest

import jobs
from helpers import wait_until
import naq_nb as nq
from naq_nb import Queue
from naq_nb.client import scheduling
from naq_nb.client.future import JobFuture
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
    ref = nq.put([1, 2, 3], client=client)
    sweep = nq.sweep.options(client=client, queue="nobody")(jobs.add, a=[1], b=[2])
    client.flush_sync()
    nats_server.kill()
    wait_until(lambda: not client._broker.is_connected, timeout=10)
    for label, call, bound in [
        ("result(timeout=2)", lambda: client.result_sync(job.job_id, timeout=2), 3.5),
        ("result(timeout=0)", lambda: client.result_sync(job.job_id, timeout=0), 1.5),
        ("status", lambda: client.status_sync(job.job_id), 2.5),  # a request's bound: 1 s here
        ("cancel", lambda: client.cancel_sync(job.job_id), 2.5),
        ("queue_size", lambda: client.queue_size_sync("nobody"), 2.5),
        ("workers", lambda: client.workers_sync(), 2.5),
        ("failed", lambda: client.failed_sync(), 2.5),
        ("nq.job", lambda: nq.job(job.job_id, client=client), 2.5),
        ("JobFuture.attach", lambda: JobFuture.attach(job.job_id, client), 2.5),
        ("enqueue_in", lambda: scheduling.enqueue_in_sync(60, jobs.add, 1, 2, client=client), 2.5),
        ("pause_scheduled_job", lambda: scheduling.pause_scheduled_job_sync("sched", client=client), 2.5),
        ("list_scheduled", lambda: scheduling.list_scheduled_sync(client=client), 2.5),
        ("options(delay=...).submit", lambda: nq.options(delay=60, client=client).submit(jobs.add, 1, 2), 2.5),
        ("nq.jobs", lambda: nq.jobs(client=client), 2.5),
        ("nq.put", lambda: nq.put([1, 2, 3], client=client), 2.5),
        ("nq.get_object", lambda: nq.get_object(ref, client=client), 2.5),
        ("nq.delete_object", lambda: nq.delete_object(ref, client=client), 2.5),
        ("nq.sweep", lambda: nq.sweep.options(client=client)(jobs.add, a=[1, 2], b=[3]), 2.5),
        ("Sweep.attach", lambda: nq.Sweep.attach(sweep.id, client=client), 2.5),
    ]:
        exc, took = _timed(call)
        assert isinstance(exc, NaqConnectionError), f"{label}: {type(exc).__name__}: {exc}"
        assert isinstance(exc, TimeoutError), label  # `except TimeoutError` callers still catch it
        assert "NATS" in str(exc) and str(nats_server.port) in str(exc), f"{label}: {exc}"
        assert took < bound, f"{label} took {took:.1f}s"
    nats_server.restart()
    assert client.status_sync(job.job_id)["status"] == "queued"  # reconnected: reads work again


def test_a_future_pending_across_a_server_restart_resolves_once_its_job_ends(own_nats_server, nats_server, nb_client,
                                                                             thread_worker):
    """kill -9 and restart with a future waiting: its job runs after the restart, and the future
    resolves then, not when the results consumer lost with the old server is found silent (10-20 s)."""
    import naq_nb as nq
    fut = nq.options(queue="later").submit(jobs.add, 1, 2)  # nothing serves "later" yet
    nb_client.flush_sync()
    nats_server.kill()
    nats_server.restart()
    wait_until(lambda: nb_client._broker is not None and nb_client._broker.is_connected, timeout=10)
    thread_worker(queues="later")
    assert fut.result(timeout=5) == 3


def test_a_future_whose_job_the_server_lost_fails_saying_so(own_nats_server, nats_server, nb_client):
    """The server comes back without its store (a container without a volume): a future pending on
    a job it no longer has fails naming that, instead of reading "queued" for ever."""
    import naq_nb as nq
    from naq_nb.core.errors import JobNotFoundError
    lost = nq.options(queue="later").submit(jobs.add, 1, 2)  # nothing serves "later"
    later = nq.options(queue="later", delay=3600).submit(jobs.add, 2, 2)  # a one-shot schedule
    nb_client.flush_sync()
    nats_server.kill()
    shutil.rmtree(nats_server.store_dir / "jetstream")
    nats_server.restart()
    with pytest.raises(JobNotFoundError, match=f"{lost.job_id}.*no longer has it"):
        lost.result(timeout=10)
    with pytest.raises(JobNotFoundError, match="no longer has it"):  # its schedule went with the store
        later.result(timeout=10)


def test_a_result_wait_on_a_job_the_server_lost_ends_at_the_reconnect(own_nats_server, nats_server, client):
    """As for futures: a fetch_job_result waiting across a restart without the store ends when the
    connection is back, saying the job is gone, not at its own timeout (or never, with none)."""
    import threading
    from naq_nb.core.errors import JobNotFoundError
    job = Queue("later", client=client).enqueue_sync(jobs.add, 1, 2)  # nothing serves "later"
    client.flush_sync()
    outcome: list = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        t0 = time.monotonic()
        try:
            client.result_sync(job.job_id, timeout=30)
        except Exception as exc:  # handed to the test
            outcome.append((exc, time.monotonic() - t0))

    waiter = threading.Thread(target=wait)
    waiter.start()
    started.wait(5)
    nats_server.kill()
    shutil.rmtree(nats_server.store_dir / "jetstream")
    nats_server.restart()
    waiter.join(40)
    exc, took = outcome[0]
    assert isinstance(exc, JobNotFoundError) and job.job_id in str(exc), repr(exc)
    assert took < 15, f"the wait ended only after {took:.1f}s"


def test_an_enqueue_made_while_the_connection_is_down_is_not_stored_behind_its_error(own_nats_server, nats_server,
                                                                                   client):
    """nats-py keeps what is published while it reconnects and sends it once back: an enqueue that
    raised during the outage was then stored anyway, and the caller's retry ran the job twice."""
    from naq_nb.core.errors import JobNotStoredError
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    nats_server.kill()
    # (until nats-py sees the socket close, a plain enqueue is handed over, its failure reported later)
    wait_until(lambda: not client._broker.is_connected, timeout=10)
    for call in (lambda: q.enqueue_sync(jobs.add, 1, 1), lambda: q.enqueue_many_sync(jobs.add, [(2, 2), (3, 3)])):
        exc, took = _timed(call)
        assert isinstance(exc, JobNotStoredError) and "not sent" in str(exc), repr(exc)
        assert took < 2.5, took  # the publish timeout (1 s) for the connection to come back
    nats_server.restart()
    wait_until(lambda: client._broker is not None and client._broker.is_connected, timeout=10)
    assert client.queue_size_sync("nobody") == 1  # only the job stored before the outage


def test_a_server_that_refuses_our_credentials_after_a_restart_is_named_not_called_down(tmp_path, naq_prefix, caplog,
                                                                                        monkeypatch):
    """The server comes back with other credentials: nats-py retries its reconnect for ever, and each
    call that waits for it failed with "server down or unreachable?" while the server was up and
    refusing us, and a worker said nothing at all. The calls and the log name the refusal."""
    import logging
    from naq_nb.core.errors import JobNotStoredError, NoAnswerError
    from naq_nb.core.server import EmbeddedServer
    from naq_nb.core.settings import Settings
    monkeypatch.setattr(broker_mod, "REQUEST_TIMEOUT", 1.0)  # JetStream's request bound, 10 s otherwise
    srv = EmbeddedServer(store_dir=tmp_path / "js", token="before").start()
    moved = None
    settings = Settings.from_env(environ={}, nats_url=srv.url, prefix=naq_prefix, publish_timeout=1.0)
    c = Client(settings=settings, token="before")
    try:
        q = Queue("nobody", client=c)
        job = q.enqueue_sync(jobs.add, 1, 2)
        c.flush_sync()
        srv.kill()
        moved = EmbeddedServer(port=srv.port, store_dir=tmp_path / "js", token="after").start()
        with caplog.at_level(logging.WARNING, logger="naq_nb"):
            wait_until(lambda: "refuses" in caplog.text, timeout=10)  # (nats-py retries every 0.5 s)
        assert "authorization" in caplog.text.lower(), caplog.text
        for call, kind in [(lambda: c.status_sync(job.job_id), NoAnswerError), (lambda: q.enqueue_sync(jobs.add, 3, 4),
                                                                                  JobNotStoredError)]:
            exc, took = _timed(call)
            assert isinstance(exc, kind), repr(exc)
            assert "refuses" in str(exc) and "authorization" in str(exc).lower(), str(exc)
            assert "server down" not in str(exc), str(exc)
            assert took < 3, took
    finally:
        try:
            c.close_sync()
        except NaqConnectionError:
            pass
        for s in (srv, moved):
            if s is not None:
                s.stop()


def test_a_future_submitted_while_the_connection_is_down_is_not_failed_as_lost_at_the_reconnect(
        own_nats_server, nats_server, nb_client, thread_worker, monkeypatch):
    """A submit made while the connection is down waits for it; at the reconnect the watch re-reads
    its futures and failed each it found no record of as "the server no longer has it ... enqueue it
    again", this one too, though its job was not even sent yet: it was then sent and ran, and a user
    who enqueued it again ran it twice. (The order is forced: the reconnect's re-read goes first.)"""
    import threading
    import naq_nb as nq
    from naq_nb.client import client as client_mod
    from naq_nb.client.watch import JobWatch, get_watch
    refetched = threading.Event()
    real_refetch, real_refuse = JobWatch._refetch, client_mod.refuse_unsent

    async def refetch(self, b):
        try:
            await real_refetch(self, b)
        finally:
            refetched.set()

    async def refuse_unsent(b, jobs_, url):
        await real_refuse(b, jobs_, url)
        assert await asyncio.to_thread(refetched.wait, 20), "no re-read after the reconnect"

    import asyncio
    monkeypatch.setattr(JobWatch, "_refetch", refetch)
    monkeypatch.setattr(client_mod, "refuse_unsent", refuse_unsent)
    first = nq.options(queue="later").submit(jobs.add, 0, 1)  # the watch is subscribed, its job stored
    nb_client.flush_sync()
    nats_server.kill()
    wait_until(lambda: not nb_client._broker.is_connected, timeout=10)
    made: list = []
    sender = threading.Thread(target=lambda: made.append(nq.options(queue="later").submit(jobs.add, 1, 2)))
    sender.start()
    wait_until(lambda: get_watch(nb_client).registered == 2, timeout=10)  # waiting for the connection
    nats_server.restart()
    sender.join(30)
    fut = made[0]
    thread_worker(queues="later")
    assert fut.result(timeout=20) == 3
    assert first.result(timeout=20) == 1


def test_a_watch_that_goes_idle_while_a_reconnect_renews_its_consumer_keeps_no_subscription(
        own_nats_server, nats_server, nb_client, thread_worker, settings, monkeypatch):
    """A reconnect renews the watch's results consumer; the watch went idle (its last future gone)
    while the new one was being made: the renewal then wrote into the emptied list (an IndexError,
    logged at debug) and the new consumer stayed, hearing every result of the prefix. It is dropped
    instead. (The order is forced: the watch goes idle inside the renewal.)"""
    import threading
    import naq_nb as nq
    from naq_nb.client.loop import run_sync
    from naq_nb.client.watch import JobWatch, get_watch
    monkeypatch.setattr("naq_nb.client.watch._LINGER", 0.1)
    thread_worker()
    assert nq.submit(jobs.add, 1, 1).result(timeout=20) == 2
    watch = get_watch(nb_client)
    wait_until(lambda: watch.registered == 0, timeout=10)  # idle timer armed (30 s): subscriptions kept
    assert watch._subs
    real, real_refetch = JobWatch._subscribe_results, JobWatch._refetch
    refetched = threading.Event()

    async def subscribe_results(self, b):
        sub = await real(self, b)
        self._go_idle()  # the idle timer fires while the renewal waited for the server
        return sub

    async def refetch(self, b):
        try:
            await real_refetch(self, b)
        finally:
            refetched.set()

    monkeypatch.setattr(JobWatch, "_subscribe_results", subscribe_results)
    monkeypatch.setattr(JobWatch, "_refetch", refetch)
    nats_server.kill()
    nats_server.restart()
    assert refetched.wait(20)
    wait_until(lambda: not watch._checks, timeout=10)  # (the idle drop of the old subscriptions)
    monkeypatch.setattr(JobWatch, "_subscribe_results", real)
    nc = run_sync(nb_client.broker()).nc
    heard = nc.stats["in_msgs"]
    other = Client(settings=settings)
    try:
        assert nq.options(client=other).map(jobs.add, range(20), range(20)).results(timeout=60) == [
            2 * i for i in range(20)]
    finally:
        other.close_sync()
    assert nc.stats["in_msgs"] - heard < 10, nc.stats["in_msgs"] - heard
