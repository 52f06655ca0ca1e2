"""naq_nb's streams vanish under a running client and worker: deleted by hand, or a server that
came back without its store (a container restarted without a volume). The next calls make the
layout again and jobs run; before, every enqueue failed for good and the worker served nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

import nats
import pytest

import jobs
from naq_nb import Queue, fetch_job_result_sync
from naq_nb.client.client import Client
from naq_nb.core.queue import Queue as CoreQueue
from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError, JobNotStoredError, NaqConnectionError


def _delete_every_stream(url: str) -> None:
    async def wipe() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            # The jobs streams last: a worker notices those at once and makes the layout again, and a
            # make racing this wipe's later deletes can leave nats-server a stream it never answers for.
            names = sorted((i.config.name for i in await js.streams_info()), key=lambda n: n.endswith("_JOBS"))
            for name in names:
                await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(wipe())


async def _drop_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def _enqueue_until_stored(q: Queue, tries: int = 3):
    """An enqueue that hit the missing stream fails (it is reported, never lost silently); the
    call after it finds the layout made again. Each try is bounded by the publish timeout."""
    for _ in range(tries):
        try:
            job = q.enqueue_sync(jobs.add, 20, 22)  # (raises an earlier enqueue's failure once)
            q.client.wait_stored_sync(job.job_id)
            return job
        except NaqConnectionError:  # JobNotStoredError, or no acknowledgement in time: a clear failure
            continue
    raise AssertionError(f"no enqueue was stored in {tries} tries")


@contextlib.contextmanager
def _served_queue(settings, thread_worker):
    """A queue of a fresh client with a worker that has run one job; the client closed after."""
    thread_worker(concurrency=2)
    client = Client(settings.nats_url, settings=settings)
    q = Queue("default", client=client)
    try:
        assert fetch_job_result_sync(q.enqueue_sync(jobs.add, 1, 2), timeout=20) == 3
        yield q
    finally:
        try:
            client.close_sync()
        except JobNotStoredError:
            pass  # the enqueue that met the missing stream, reported again at close


def test_streams_deleted_under_a_running_worker_are_made_again(settings, thread_worker, caplog):
    with _served_queue(settings, thread_worker) as q:
        with caplog.at_level(logging.WARNING, logger="naq_nb"):
            _delete_every_stream(settings.nats_url)
            job = _enqueue_until_stored(q)
            assert fetch_job_result_sync(job, timeout=20) == 42, "the worker made its consumer again"
        assert any("streams or consumer are gone" in r.getMessage() for r in caplog.records)


def test_a_server_back_without_its_store_gets_the_layout_again(own_nats_server, settings, thread_worker, caplog):
    with _served_queue(settings, thread_worker) as q:
        with caplog.at_level(logging.WARNING, logger="naq_nb"):
            own_nats_server.kill()
            shutil.rmtree(own_nats_server.store_dir / "jetstream")
            own_nats_server.restart()
            job = _enqueue_until_stored(q)
            assert fetch_job_result_sync(job, timeout=20) == 42
    # The worker's re-read of parked jobs after the reconnect waits for its streams to be made again.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("status,description,gone", [
    ("503", "", True),
    ("409", "Consumer Deleted", True),
    ("409", "Exceeded MaxWaiting", False),
    ("408", "Request Timeout", False),
])
def test_which_pull_answers_mean_the_consumer_is_gone(status, description, gone):
    from naq_nb.core.puller import _consumer_gone
    assert _consumer_gone(status, {"Description": description}) is gone


@pytest.mark.parametrize("chosen_id", [None, "own-id-1"], ids=["handed-to-the-loop", "acknowledged-in-the-call"])
def test_a_job_stored_without_its_queued_record_is_waited_for_not_unknown(settings, thread_worker, chosen_id):
    """A chosen id takes the path that waits for both acknowledgements in the call; it lost the
    job's stream sequence, so a read of such a job said "no job with id" once its worker took it."""
    client = Client(settings.nats_url, settings=settings)
    q = Queue("default", client=client)
    sender = q if chosen_id is None else q.configure(job_id=chosen_id)
    try:
        assert q.count_sync() == 0  # connected, layout made
        asyncio.run(_drop_stream(settings.nats_url, f"KV_{settings.prefix}_status"))
        job = sender.enqueue_sync(jobs.add, 1, 2)  # its queued record finds no stream; the job is stored
        client.wait_stored_sync(job.job_id)
        assert job.unrecorded
        assert client.status_sync(job.job_id)["status"] == "queued", "what its stored message stands for"
        with pytest.raises(JobNotFinishedError):  # not JobNotFoundError: this client stored it
            fetch_job_result_sync(job, timeout=1.0)
        thread_worker(concurrency=1)
        assert fetch_job_result_sync(job, timeout=20) == 3
    finally:
        client.close_sync()


def test_a_job_stored_without_its_record_and_then_purged_is_named_gone(settings):
    client = Client(settings.nats_url, settings=settings)
    q = Queue("default", client=client)
    try:
        assert q.count_sync() == 0
        asyncio.run(_drop_stream(settings.nats_url, f"KV_{settings.prefix}_status"))
        job = q.enqueue_sync(jobs.add, 1, 2)
        client.wait_stored_sync(job.job_id)
        assert job.unrecorded
        assert q.purge_sync() == 1
        with pytest.raises(JobNotFoundError) as err:  # its message is gone: no waiting for it
            fetch_job_result_sync(job, timeout=10)
        assert err.type is JobNotFoundError, "named gone, not 'not finished'"
    finally:
        client.close_sync()


async def test_a_layout_forgotten_while_it_is_made_is_made_again(broker, monkeypatch):
    made = []
    real = broker._ensure

    async def counted() -> None:
        made.append(1)
        await real()

    monkeypatch.setattr(broker, "_ensure", counted)
    broker.forget_layout()
    task = asyncio.ensure_future(broker.ensure_layout())
    await asyncio.sleep(0)  # the attempt is under way
    broker.forget_layout()  # (a reconnect, a publish no stream took)
    await task
    assert len(made) == 2 and broker.layout_ready


async def _made_again(broker, stream: str, t0: float, grace: float) -> float:
    """Seconds from ``t0`` until ``stream`` exists again (polled; fails after 15 s)."""
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await broker.js.stream_info(stream)
            return loop.time() - t0
        assert loop.time() - t0 < 15 + grace, f"{stream} was never made again"
        await asyncio.sleep(0.05)


async def test_a_worker_lets_a_deletion_finish_before_making_its_streams_again(broker, start_worker, monkeypatch):
    """nats-server removes a deleted stream's files after it answers; a stream made again by that
    name at once could lose its folder and store nothing (1 run in 8 of the deletion test above,
    under load, before the worker waited)."""
    from naq_nb.core import broker as broker_mod
    monkeypatch.setattr(broker_mod, "REMAKE_GRACE", 1.0)
    w = await start_worker(concurrency=1)
    jobs_stream = broker.layout.jobs_stream
    t0 = asyncio.get_running_loop().time()  # (the worker may notice the deletion on its own first)
    await broker.js.delete_stream(jobs_stream)
    w._layout_lost()  # what a pull answered "no consumer" calls
    assert await _made_again(broker, jobs_stream, t0, 1.0) >= 1.0, "made again before the deletion could finish"


async def test_a_client_lets_a_deletion_finish_before_making_its_streams_again(settings, monkeypatch):
    """The same wait for a client: the enqueue that met the deleted stream fails; the next call
    makes the layout again, no sooner than the grace after the loss was seen."""
    from naq_nb.core import broker as broker_mod
    monkeypatch.setattr(broker_mod, "REMAKE_GRACE", 1.0)
    b = await broker_mod.Broker.connect(settings=settings)
    try:
        q = CoreQueue(b)
        await q.enqueue(jobs.add, 1, 2)  # layout made
        await b.js.delete_stream(b.layout.jobs_stream)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(JobNotStoredError, match="no stream took it"):
            await q.enqueue(jobs.add, 1, 2)
        assert not b.layout_ready, "the loss was seen"
        job = await q.enqueue(jobs.add, 3, 4)  # waits out the grace, then makes the layout again
        assert asyncio.get_running_loop().time() - t0 >= 1.0, "made again before the deletion could finish"
        assert job.sequence is not None and await q.count() == 1
    finally:
        await b.close()
