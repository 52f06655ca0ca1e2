"""Results pushed by the worker to the client that enqueued the job (client/inbox.py): a read of a
finished job needs no round trip, and a push is trusted no more than a read from the bucket."""

from __future__ import annotations

import asyncio
import json

import pytest

import jobs
from helpers import eventually, good_meta
from naq_nb import Queue
from naq_nb.client.client import Client
from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError
from naq_nb.core.failed import list_failed
from naq_nb.core.records import encode_result
from naq_nb.core.serialization import get_serializer, seal_record


@pytest.fixture
def client(settings):
    c = Client(settings=settings)
    yield c
    c.close_sync()


async def _kept(client: Client, n: int) -> None:
    async def have() -> bool:
        return len(client._inbox) >= n

    await eventually(have, 30, f"{n} pushed result(s) kept by the client")


async def test_a_finished_job_is_read_from_its_push_not_from_the_bucket(client, broker, start_worker):
    await start_worker()
    q = Queue("default", client=client)
    job = await q.enqueue(jobs.add, 2, 3)
    assert job.reply == client._inbox.token
    await _kept(client, 1)
    # The bucket's copy is gone: only the push can answer now.
    kv = await broker.kv(broker.layout.results_bucket)
    await kv.purge(job.job_id)
    assert await client.result(job.job_id, 5) == 5
    # Handed out once: the next read asks the bucket, which no longer has it (the job ended).
    with pytest.raises(JobNotFoundError, match="its result is gone") as info:
        await client.result(job.job_id, 0)
    assert not isinstance(info.value, JobNotFinishedError)


async def test_jobs_enqueued_as_a_batch_are_not_pushed(client, start_worker):
    await start_worker()
    batch = await client.enqueue_jobs([client.make_job(jobs.add, (i, 1)) for i in range(3)])
    assert all(j.reply is None for j in batch)
    assert [await client.result(j.job_id, 30) for j in batch] == [1, 2, 3]
    assert len(client._inbox) == 0


async def test_a_forged_push_is_ignored_when_signing_is_on(settings, broker, start_worker):
    signed = settings.with_(signing_key=b"s3cret")
    client = Client(settings=signed)
    try:
        job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)  # no worker yet
        forged = seal_record(encode_result(get_serializer("pickle"), 666, result_ttl=None), job.job_id, b"other")
        await broker.nc.publish(broker.layout.reply_subject(client._inbox.token, job.job_id), forged)
        await _kept(client, 1)
        with pytest.raises(JobNotFinishedError):  # not 666: the push's seal does not verify
            await client.result(job.job_id, 0)
        await start_worker(settings=signed)
        assert await client.result(job.job_id, 30) == 5
    finally:
        await client.close()


async def test_garbage_pushed_to_a_waiting_read_does_not_end_it(client, broker, start_worker):
    job = await Queue("default", client=client).enqueue(jobs.add, 1, 1)
    await client.wait_stored(job.job_id)
    await broker.nc.publish(broker.layout.reply_subject(client._inbox.token, job.job_id), b"\x00garbage")
    await _kept(client, 1)
    with pytest.raises(JobNotFinishedError):
        await client.result(job.job_id, 0)
    await start_worker()
    assert await client.result(job.job_id, 30) == 2


@pytest.mark.parametrize("token", ["$JS.API.STREAM.DELETE.X", "a.b", "*", "x" * 161, 7])
async def test_a_job_naming_a_bad_result_inbox_is_dead_lettered_not_run(broker, start_worker, token):
    await start_worker()
    meta = good_meta("badinbox", rt=token)
    await broker.js.publish(broker.layout.queue_subject("default"), b"x",
                            headers={"Naq-Meta": json.dumps(meta), "Nats-Msg-Id": "badinbox"})

    async def dead_lettered() -> list:
        return await list_failed(broker)

    failed = await eventually(dead_lettered, 30, "the job in the failed stream")
    assert "rt (result inbox)" in failed[0]["reason"]


def test_futures_get_their_results_through_their_watch_not_pushed(nb_client, thread_worker):
    import naq_nb as nq
    thread_worker()
    f = nq.submit(jobs.add, 1, 2)
    assert f.result(30) == 3
    assert f.job.reply is None  # nothing piles up unread in the client's inbox
    assert len(nb_client._inbox) == 0


async def test_the_status_read_right_after_a_result_is_the_final_one(client, start_worker):
    # The worker's status and result go to two streams the server may store in either order; it
    # tells the client (push, ack) only once both are stored, so no read sees "queued" after the result.
    await start_worker(concurrency=4)
    q = Queue("default", client=client)
    stale = []
    for i in range(200):
        job = await q.enqueue(jobs.add, i, 1)
        assert await client.result(job.job_id, 30) == i + 1
        rec = await client.status(job.job_id)
        if rec["status"] != "succeeded" or "finished_at" not in rec:
            stale.append((i, rec["status"]))
    assert not stale, f"status read after the result was not final: {stale[:5]}"


async def _result_put_before_status(client, broker, timeout=30):
    """A waiting read, then the job's result stored by hand while its status still says queued (no
    worker): what a waiting read sees between a worker's result write and its status write."""
    import asyncio

    from naq_nb.core import results

    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
    lay = broker.layout
    sub = await broker.nc.subscribe(lay.kv_subject(lay.results_bucket, job.job_id))  # as wait_for_result's
    waiting = asyncio.ensure_future(results._wait_pushed(broker, job.job_id, sub, timeout, None))
    record = encode_result(get_serializer("pickle"), 5, result_ttl=None)
    await broker.js.publish(lay.kv_subject(lay.results_bucket, job.job_id), record)
    return job, sub, waiting


async def test_a_result_stored_before_its_status_waits_for_the_status(client, broker, monkeypatch):
    import asyncio
    import time

    from naq_nb.core import results
    from naq_nb.core.status import JobStatus, encode_status

    monkeypatch.setattr(results, "_STATUS_LAG", 60.0)  # only the status can end this wait
    job, sub, waiting = await _result_put_before_status(client, broker)
    done, _ = await asyncio.wait({waiting}, timeout=0.5)
    assert not done, "the result came back while the status still said queued"
    status = dict(await client.status(job.job_id), status=JobStatus.SUCCEEDED.value, finished_at=time.time())
    lay = broker.layout
    await broker.js.publish(lay.kv_subject(lay.status_bucket, job.job_id), encode_status(status))
    assert (await asyncio.wait_for(waiting, 10)).unwrap() == 5
    await sub.unsubscribe()


async def test_a_status_that_never_ends_delays_the_result_only_so_long(client, broker, monkeypatch):
    import asyncio

    from naq_nb.core import results

    monkeypatch.setattr(results, "_STATUS_LAG", 0.2)
    job, sub, waiting = await _result_put_before_status(client, broker)
    assert (await asyncio.wait_for(waiting, 10)).unwrap() == 5  # after the lag: the stored result
    assert (await client.status(job.job_id))["status"] == "queued"
    await sub.unsubscribe()
    # A deadline before the lag ends returns the stored result too, not "not finished".
    monkeypatch.setattr(results, "_STATUS_LAG", 60.0)
    job, sub, waiting = await _result_put_before_status(client, broker, timeout=1.0)
    assert (await asyncio.wait_for(waiting, 10)).unwrap() == 5
    await sub.unsubscribe()


async def test_a_read_in_the_gap_between_the_two_writes_waits_for_the_status(client, broker, monkeypatch):
    # The result is stored before the read starts (the read's first get finds it), the status not yet.
    import asyncio
    import time

    from naq_nb.core import results
    from naq_nb.core.status import JobStatus, encode_status

    monkeypatch.setattr(results, "_STATUS_LAG", 60.0)
    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
    lay = broker.layout
    record = encode_result(get_serializer("pickle"), 5, result_ttl=None)
    await broker.js.publish(lay.kv_subject(lay.results_bucket, job.job_id), record)
    waiting = asyncio.ensure_future(results.wait_for_result(broker, job.job_id, 30))
    done, _ = await asyncio.wait({waiting}, timeout=0.5)
    assert not done, "the result came back while the status still said queued"
    status = dict(await client.status(job.job_id), status=JobStatus.SUCCEEDED.value, finished_at=time.time())
    await broker.js.publish(lay.kv_subject(lay.status_bucket, job.job_id), encode_status(status))
    assert (await asyncio.wait_for(waiting, 10)).unwrap() == 5
    assert (await results.wait_for_result(broker, job.job_id, 0)).unwrap() == 5  # a check-once read: at once


@pytest.fixture
def no_pushes(monkeypatch):
    """Workers store results but push none (a push lost on a reconnect, a writer that never pushes)."""
    from naq_nb.core import final_writes, runner

    async def _lost(*args, **kwargs):  # (push_result's and push_early's arguments alike)
        return None

    monkeypatch.setattr(runner, "push_result", _lost)
    monkeypatch.setattr(final_writes, "push_early", _lost)


@pytest.fixture
def no_safety_reads(monkeypatch):
    """The wait's slow safety reads come only after a minute, and a read waiting for its push waits
    for nothing else for a minute: what ends it sooner is the path under test."""
    from naq_nb.core import results

    monkeypatch.setattr(results, "_SAFETY_READS", (60.0,))
    monkeypatch.setattr(results, "_PUSH_ONLY", 60.0)


async def test_a_waiting_read_of_its_own_job_does_not_read_the_bucket_while_it_runs(client, start_worker, monkeypatch,
                                                                                    no_safety_reads):
    # Its worker pushes the result once stored: reading the bucket meanwhile finds nothing.
    from naq_nb.core import results

    reads = []
    get_result = results.get_result

    async def counted(broker, job_id):
        reads.append(job_id)
        return await get_result(broker, job_id)

    monkeypatch.setattr(results, "get_result", counted)
    await start_worker()
    q = Queue("default", client=client)
    for i in range(5):
        job = await q.enqueue(jobs.sleep_for, 0.2 + i / 100)
        assert client._inbox.expects(job.job_id)
        assert await client.result(job.job_id, 30) == 0.2 + i / 100
        assert not client._inbox.expects(job.job_id)  # read: a next read asks the bucket
    assert reads == []


@pytest.mark.parametrize("seconds", [0.05, 1.0], ids=["ends_in_the_window", "ends_after_it"])
async def test_a_result_whose_push_was_lost_is_read_once_the_push_only_window_ends(client, start_worker, no_pushes,
                                                                                   monkeypatch, seconds):
    # No push comes (lost, or a worker too old to push): after the window the read reads the bucket
    # and subscribes to the result key, whose put then wakes it. No safety read comes in time.
    from naq_nb.core import results

    monkeypatch.setattr(results, "_SAFETY_READS", (60.0,))
    monkeypatch.setattr(results, "_PUSH_ONLY", 0.3)
    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.sleep_for, seconds)
    assert client._inbox.expects(job.job_id)
    # Waiting without a deadline (the deadline's own read would answer too).
    assert await asyncio.wait_for(client.result(job.job_id), 20) == seconds


async def _until_running(client: Client, job_id: str) -> None:
    async def running() -> bool:
        return (await client.status(job_id))["status"] == "running"

    await eventually(running, 30, "the job running")


async def _cancel_from_another_client(settings, job_id: str) -> None:
    other = Client(settings=settings)
    try:
        assert await other.cancel(job_id)
    finally:
        await other.close()


async def test_a_waiting_read_of_a_pushed_job_holds_no_subscription(client, start_worker, monkeypatch):
    # The worker's push ends the wait: no SUB / UNSUB per job on the caller's connection.
    from naq_nb.core import results

    monkeypatch.setattr(results, "_PUSH_ONLY", 30.0)  # however long the job takes to show as running
    await start_worker()
    q = Queue("default", client=client)
    await client.result((await q.enqueue(jobs.add, 0, 0)).job_id, 30)  # the connections are up
    b = await client.broker_here()
    before = set(b.nc._subs)
    job = await q.enqueue(jobs.sleep_for, 0.5)
    waiting = asyncio.ensure_future(client.result(job.job_id, 30))
    await _until_running(client, job.job_id)
    assert not waiting.done() and set(b.nc._subs) == before, "a subscription for one wait"
    assert await asyncio.wait_for(waiting, 30) == 0.5


async def test_a_cancel_by_another_client_ends_a_waiting_read_at_once(client, settings, no_safety_reads):
    # No worker: the job stays queued. Another process cancels it; its cancel pushes the notice.
    from naq_nb.core.errors import JobCancelledError

    job = await Queue("default", client=client).enqueue(jobs.add, 1, 1)
    await client.wait_stored(job.job_id)
    assert client._inbox.expects(job.job_id)
    waiting = asyncio.ensure_future(client.result(job.job_id))  # no deadline: only the push can end it
    await _cancel_from_another_client(settings, job.job_id)
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(waiting, 20)


async def test_a_running_job_cancelled_by_another_client_ends_a_waiting_read_at_once(client, settings, start_worker,
                                                                                    no_safety_reads):
    # The cancel and the worker both write the result; whichever loses still tells the client to read.
    from naq_nb.core.errors import JobCancelledError

    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.async_sleep_for, 30)
    waiting = asyncio.ensure_future(client.result(job.job_id))
    await _until_running(client, job.job_id)
    await _cancel_from_another_client(settings, job.job_id)
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(waiting, 20)


async def test_a_dependency_failing_ends_a_waiting_read_of_its_dependent_at_once(client, start_worker,
                                                                                no_safety_reads):
    # The dependent is parked (its dependency runs); the dependency fails; the release that fails
    # the dependent pushes the notice to the client waiting for it.
    from naq_nb.core.errors import DependencyFailedError

    q = Queue("default", client=client)
    dep = await q.configure(max_retries=0).enqueue(jobs.sleep_for, "not a number")
    child = await q.configure(depends_on=[dep.job_id]).enqueue(jobs.add, 1, 1)
    assert client._inbox.expects(child.job_id)
    waiting = asyncio.ensure_future(client.result(child.job_id))
    await start_worker()
    with pytest.raises(DependencyFailedError):
        await asyncio.wait_for(waiting, 30)


async def test_a_finished_job_whose_push_was_lost_is_read_at_the_deadline(client, start_worker, no_pushes,
                                                                         no_safety_reads):
    # Stored before the read began, its push lost: nothing wakes the wait, and its deadline must not
    # say "not finished" for a job that has finished.
    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)

    async def succeeded() -> bool:
        return (await client.status(job.job_id))["status"] == "succeeded"

    await eventually(succeeded, 30, "the job succeeded")
    assert client._inbox.expects(job.job_id)
    assert await client.result(job.job_id, 0.2) == 5


async def test_a_result_too_big_to_push_is_read_at_once(client, start_worker, monkeypatch, no_safety_reads):
    from naq_nb.core.results import PUSH_LIMIT

    await start_worker()
    q = Queue("default", client=client)
    big = PUSH_LIMIT + 1000
    job = await q.enqueue(jobs.big_result, big)  # read while it runs: the empty push ends the wait
    # Marked for a push (which, on a loaded machine, may already have come: then it is kept).
    assert client._inbox.expects(job.job_id) or job.job_id in client._inbox._records
    assert len(await asyncio.wait_for(client.result(job.job_id), 20)) == big
    # Finished before the read begins: the worker's empty push, kept, says "stored: read it".
    job = await q.enqueue(jobs.big_result, big)
    await _kept(client, 1)
    assert len(await asyncio.wait_for(client.result(job.job_id), 20)) == big


async def test_a_waited_job_whose_records_vanish_raises_not_found_instead_of_waiting_forever(client, broker,
                                                                                            monkeypatch):
    from naq_nb.core import results
    from naq_nb.core.errors import JobNotFoundError

    monkeypatch.setattr(results, "_SAFETY_READS", (0.2,))
    job = await Queue("default", client=client).enqueue(jobs.add, 1, 1)  # no worker: it stays queued
    await client.wait_stored(job.job_id)
    assert client._inbox.expects(job.job_id)
    waiting = asyncio.ensure_future(client.result(job.job_id))  # no deadline
    kv = await broker.kv(broker.layout.status_bucket)
    await kv.purge(job.job_id)  # as its TTL would, while it is waited for
    with pytest.raises(JobNotFoundError):
        await asyncio.wait_for(waiting, 20)


async def test_a_duplicate_enqueue_leaves_no_push_expected_for_its_id(client, start_worker):
    # The same call under the same chosen id is that job, not sent again: nothing new will be pushed.
    q = Queue("default", client=client)
    first = await q.configure(job_id="dup-push").enqueue(jobs.add, 2, 2)
    assert client._inbox.expects(first.job_id)
    again = await q.configure(job_id="dup-push").enqueue(jobs.add, 2, 2)
    assert again.duplicate and not client._inbox.expects(again.job_id)
    await start_worker()
    assert await asyncio.wait_for(client.result(again.job_id), 20) == 4  # read the usual way


async def test_a_delivery_that_finds_its_result_stored_pushes_a_notice(settings, broker, start_worker,
                                                                      no_safety_reads):
    # A run stored the result and died before its push and its ack: the next delivery (checked
    # against the bucket, as every delivery is with signing on) only acks, and tells the client to read.
    signed = settings.with_(signing_key=b"s3cret")
    client = Client(settings=signed)
    try:
        job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)  # no worker yet
        await client.wait_stored(job.job_id)
        waiting = asyncio.ensure_future(client.result(job.job_id))  # no deadline: only a push ends it
        stored = seal_record(encode_result(get_serializer("pickle"), 7, result_ttl=None), job.job_id, b"s3cret")
        await broker.js.publish(broker.layout.kv_subject(broker.layout.results_bucket, job.job_id), stored)
        await start_worker(settings=signed)
        assert await asyncio.wait_for(waiting, 30) == 7  # the stored one: the job did not run again
    finally:
        await client.close()


async def test_a_dependent_failed_by_its_dependency_reads_as_such_with_signing_on(settings, start_worker):
    # The release that fails a parked dependent seals its result as a worker would.
    from naq_nb.core.errors import DependencyFailedError

    signed = settings.with_(signing_key=b"s3cret")
    client = Client(settings=signed)
    try:
        q = Queue("default", client=client)
        dep = await q.configure(max_retries=0).enqueue(jobs.sleep_for, "not a number")
        child = await q.configure(depends_on=[dep.job_id]).enqueue(jobs.add, 1, 1)
        await start_worker(settings=signed)
        with pytest.raises(DependencyFailedError):
            await client.result(child.job_id, 30)
    finally:
        await client.close()


@pytest.mark.parametrize("rt", ["a.>", "*", "x y", 7, ""])
async def test_a_cancel_of_a_job_whose_status_record_names_a_forged_inbox_still_cancels(broker, rt, caplog):
    # A status record forged with a bad result inbox token: the cancel is done and stored, nothing is
    # published to that subject, and the log names the refused token.
    import logging

    from naq_nb.core.cancel import cancel_job
    from naq_nb.core.queue import Queue as CoreQueue
    from naq_nb.core.results import wait_for_result
    from naq_nb.core.status import encode_status, first_record

    job = await CoreQueue(broker).enqueue(jobs.add, 1, 1)  # no worker: it stays queued
    kv = await broker.kv(broker.layout.status_bucket)
    rec = dict(first_record(job.job_id, "default", "queued", func="jobs.add", name=None, enqueued_at=1.0), rt=rt)
    await kv.put(job.job_id, encode_status(rec))
    with caplog.at_level(logging.WARNING, logger="naq_nb.client"):
        assert await cancel_job(broker, job.job_id)
    assert (await wait_for_result(broker, job.job_id, 10)).status == "cancelled"
    if rt:
        assert any("not a result inbox token" in r.getMessage() for r in caplog.records)


async def test_an_async_callers_job_is_pushed_to_the_connection_of_its_own_loop(client, broker, start_worker):
    # The push then arrives on the loop that awaits it: no hop through the background loop thread.
    await start_worker()
    q = Queue("default", client=client)
    await client.result((await q.enqueue(jobs.add, 0, 0)).job_id, 30)  # the background connection is up
    b_here = await client.broker_here()
    token = client._inbox.token_here(b_here)
    assert token and token != client._inbox.token
    job = await q.enqueue(jobs.add, 2, 3)
    assert job.reply == token
    await _kept(client, 1)  # only this loop's connection listens on that token
    kv = await broker.kv(broker.layout.results_bucket)
    await kv.purge(job.job_id)  # only the push can answer now
    assert await client.result(job.job_id, 5) == 5


async def test_a_blocking_read_on_the_loop_its_push_goes_to_does_not_wait_for_the_push(client, thread_worker,
                                                                                       no_safety_reads):
    # That loop is held by the blocking call itself, so the push can't be received until it returns:
    # the read (on the background loop) reads the bucket and subscribes instead of waiting a minute.
    from naq_nb.client.loop import run_sync

    thread_worker()  # not on this loop, which the blocking read holds
    q = Queue("default", client=client)
    await client.result((await q.enqueue(jobs.add, 0, 0)).job_id, 30)  # the background connection is up
    await client.broker_here()
    job = await q.enqueue(jobs.sleep_for, 0.3)
    assert client._inbox.expects(job.job_id)  # here, on the loop the push comes to

    async def expected_on_the_background_loop() -> bool:
        return client._inbox.expects(job.job_id)

    assert not run_sync(expected_on_the_background_loop(), 10)
    assert client.result_sync(job.job_id, 20) == 0.3  # blocks this loop; a push wait would time out


@pytest.mark.parametrize("own_loop", [False, True], ids=["background_connection", "loop_connection"])
async def test_after_a_reconnect_a_read_does_not_wait_for_a_push_lost_meanwhile(client, own_nats_server,
                                                                                 nats_server, own_loop):
    q = Queue("nobody", client=client)
    await q.enqueue(jobs.add, 0, 0)
    await client.flush()
    if own_loop:
        await client.broker_here()
    job = await q.enqueue(jobs.add, 1, 2)
    await client.wait_stored(job.job_id)
    assert client._inbox.expects(job.job_id)
    assert (job.reply == client._inbox.token) is not own_loop
    nats_server.restart()  # a worker's push sent while this client was away is gone

    async def not_expected() -> bool:
        return not client._inbox.expects(job.job_id)

    await eventually(not_expected, 30, "the reconnected client no longer waiting for that push")


async def test_a_push_for_a_job_already_read_from_the_bucket_is_not_kept(client, thread_worker, monkeypatch):
    # A blocking read on the loop that receives the push reads the bucket; the push that comes
    # later (when the loop runs again) must not stay in the inbox unread.
    thread_worker()
    q = Queue("default", client=client)
    await client.result((await q.enqueue(jobs.add, 0, 0)).job_id, 30)
    await client.broker_here()
    delivered = []
    deliver = client._inbox.deliver
    monkeypatch.setattr(client._inbox, "deliver", lambda jid, data: (deliver(jid, data), delivered.append(jid)))
    job = await q.enqueue(jobs.add, 2, 3)
    assert client.result_sync(job.job_id, 30) == 5  # holds this loop: the push waits in the socket

    async def push_arrived() -> bool:
        return job.job_id in delivered

    await eventually(push_arrived, 30, "the late push received")
    assert len(client._inbox) == 0


@pytest.fixture
def pushes(monkeypatch):
    """The worker's pushes, by kind: ``early`` (as the writes go out) and ``stored`` (after them)."""
    from naq_nb.core import final_writes, runner

    seen: dict[str, list[str]] = {"early": [], "stored": []}
    for module, name, kind in ((final_writes, "push_early", "early"), (runner, "push_result", "stored")):
        async def record(broker, token, jid, *a, _push=getattr(module, name), _kind=kind):  # noqa: B008 (bound per turn)
            seen[_kind].append(jid)
            return await _push(broker, token, jid, *a)

        monkeypatch.setattr(module, name, record)
    return seen


async def test_a_lone_jobs_result_is_pushed_as_it_is_written_and_read_once_proven(client, start_worker, pushes):
    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
    assert await client.result(job.job_id, 30) == 5
    assert pushes == {"early": [job.job_id], "stored": []}  # no push after the writes: the acks told it
    rec = await client.status(job.job_id)
    assert rec["status"] == "succeeded" and "finished_at" in rec  # both writes stored before the read ended
    assert not client._inbox._unproven


@pytest.fixture
def result_ack_not_copied(monkeypatch):
    """The worker's result write is acknowledged to the worker only: the client never learns that the
    record it was pushed early is stored (a copy lost, or a forger's early push)."""
    from naq_nb.core.broker import Broker

    publish = Broker.publish_async

    async def without_result_copy(self, subject, payload, headers=None, *, ack_copy=None, **kw):
        if ack_copy is not None and ack_copy[2] == "r":
            ack_copy = None
        return await publish(self, subject, payload, headers, ack_copy=ack_copy, **kw)

    monkeypatch.setattr(Broker, "publish_async", without_result_copy)


async def test_an_early_push_not_proven_stored_is_never_handed_out(client, broker, start_worker, pushes,
                                                                    result_ack_not_copied):
    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)

    async def kept_apart():
        runs = client._inbox._unproven.get(job.job_id, {})
        return any(record is not None and "s" in kinds for record, kinds in runs.values())

    await eventually(kept_apart, 30, "the early push and the status's acknowledgement at the client")
    assert pushes["early"] == [job.job_id] and client._inbox.take(job.job_id) is None
    assert (await client.status(job.job_id))["status"] == "succeeded"
    # Only the bucket can answer now, and it no longer has the result: the early copy is not used.
    kv = await broker.kv(broker.layout.results_bucket)
    await kv.purge(job.job_id)
    with pytest.raises(JobNotFoundError, match="its result is gone"):
        await client.result(job.job_id, 5)


async def test_an_early_push_with_forged_acknowledgements_is_ignored_when_signing_is_on(settings, broker,
                                                                                         start_worker):
    signed = settings.with_(signing_key=b"s3cret")
    client = Client(settings=signed)
    try:
        job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)  # no worker yet
        forged = seal_record(encode_result(get_serializer("pickle"), 666, result_ttl=None), job.job_id, b"other")
        lay, token = broker.layout, client._inbox.token
        await broker.nc.publish(lay.early_subject(token, job.job_id, "forger", "1"), forged)
        for kind in "sr":
            head = lay.early_ack_head(token, job.job_id, kind, "forger", "1")
            await broker.nc.publish(f"{head}.1", b'{"stream":"KV_x","seq":1}')
        await _kept(client, 1)  # "proven" by the forged acknowledgements, so handed to the inbox...
        with pytest.raises(JobNotFinishedError):  # ...where its seal does not verify
            await client.result(job.job_id, 0)
        await start_worker(settings=signed)
        assert await client.result(job.job_id, 30) == 5
    finally:
        await client.close()


async def test_a_busy_worker_pushes_results_after_their_writes(client, start_worker, pushes, tmp_path):
    # Other jobs in hand: no early push, whose two copied acknowledgements would cost the server and
    # the client two messages a job.
    await start_worker(concurrency=4)
    q = Queue("default", client=client)
    gate = tmp_path / "go"
    holders = [await q.enqueue(jobs.wait_for_file, str(gate)) for _ in range(3)]

    async def holding() -> bool:
        return [(await client.status(h.job_id))["status"] for h in holders] == ["running"] * 3

    await eventually(holding, 30, "three jobs running")
    job = await q.enqueue(jobs.add, 2, 3)
    assert await client.result(job.job_id, 30) == 5
    assert pushes == {"early": [], "stored": [job.job_id]}
    (tmp_path / "go.tmp").write_text("go")
    (tmp_path / "go.tmp").rename(gate)  # whole at once: a job may read it as soon as it exists
    assert [await client.result(h.job_id, 30) for h in holders] == ["go"] * 3
    # The last holder to end had none beside it then, but the worker took another job during its run.
    assert not pushes["early"] and sorted(pushes["stored"]) == sorted([job.job_id] + [h.job_id for h in holders])


async def test_a_worker_whose_acl_forbids_the_copied_acknowledgements_pushes_after_its_writes(
        tmp_path, settings, start_worker, pushes):
    # The README's worker role once had no subscription on the reply subjects: such a worker must
    # not send writes whose acknowledgements it can't receive (each would time out and be retried).
    from naq_nb.core.server import EmbeddedServer

    reply = f"{settings.prefix}.reply.>"
    srv = EmbeddedServer(store_dir=tmp_path / "js", extra_config=(
        "authorization { users = ["
        f'{{user: w, password: wp, permissions: {{subscribe: {{deny: ["{reply}"]}}}}}}, '
        "{user: c, password: cp}] }"))
    srv.start()
    try:
        url = srv.url.replace("nats://", "nats://{}@")
        client = Client(settings=settings.with_(nats_url=url.format("c:cp")))
        try:
            worker = await start_worker(settings=settings.with_(nats_url=url.format("w:wp")))
            assert not worker.broker.ack_copies
            job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
            assert await client.result(job.job_id, 30) == 5
            assert pushes == {"early": [], "stored": [job.job_id]}
        finally:
            await client.close()
    finally:
        srv.stop()


async def test_a_client_that_takes_no_early_pushes_is_pushed_to_after_the_writes(settings, start_worker, pushes):
    # An older client's token lacks the mark: it listens on <token>.* only, so an early push and its
    # acknowledgements would never reach it and each of its reads would wait for its fallback.
    client = Client(settings=settings)
    client._inbox.token = "0123456789abcdef"
    try:
        await start_worker()
        job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
        assert job.reply == "0123456789abcdef"
        assert await client.result(job.job_id, 30) == 5
        assert pushes == {"early": [], "stored": [job.job_id]}
    finally:
        await client.close()


async def test_an_early_push_that_could_not_be_sent_is_followed_by_the_push_after_the_writes(
        client, start_worker, monkeypatch, no_safety_reads):
    from naq_nb.core import final_writes, runner

    sent_after = []
    push_result = runner.push_result

    async def send_failed(broker, token, jid, record, run):
        return False  # as when the socket stayed full past the publish timeout

    async def pushed_after(broker, token, jid, *a):
        sent_after.append(jid)
        return await push_result(broker, token, jid, *a)

    monkeypatch.setattr(final_writes, "push_early", send_failed)
    monkeypatch.setattr(runner, "push_result", pushed_after)
    await start_worker()
    job = await Queue("default", client=client).enqueue(jobs.add, 2, 3)
    assert await client.result(job.job_id, 10) == 5  # not a minute's wait for a push never sent
    assert sent_after == [job.job_id]
