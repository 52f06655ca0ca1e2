"""An async caller's enqueue sent on its own loop's connection (client.py ``_send_direct``): written to
the socket within the call, confirmed by the background loop, so it is stored and read even while the
caller blocks its loop; failures are reported as for any enqueue; one caller's jobs keep their order."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import api

import jobs
from helpers import eventually
from naq_nb import Queue
from naq_nb.client.client import Client
from naq_nb.client.loop import call_soon
from naq_nb.core.errors import JobNotStoredError


@pytest.fixture
def client(quick_client):
    return quick_client


async def _loop_connection(client: Client, q: Queue):
    """Both connections up: the background loop's (an enqueue, stored) and this loop's own."""
    await q.enqueue(jobs.add, 0, 0)
    await client.flush()
    return await client.broker_here()


async def test_an_async_callers_job_goes_out_on_its_loops_connection_within_the_call(client):
    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    sent = here.nc.stats["out_msgs"]
    job = await q.enqueue(jobs.add, 1, 2)
    assert here.nc.stats["out_msgs"] == sent + 2  # its status record and the job itself
    await client.wait_stored(job.job_id)
    assert job.sequence and (await client.status(job.job_id))["status"] == "queued"


async def test_a_job_sent_from_a_loop_is_stored_and_read_while_a_blocking_call_holds_that_loop(client,
                                                                                            thread_worker):
    # A notebook cell: `job = await q.enqueue(f)` then `job.result()`, which blocks the kernel's loop.
    # Nothing of this loop runs from here on: the job must already be on the wire, and its
    # acknowledgements and result must come to the background loop.
    thread_worker()
    q = Queue("default", client=client)
    here = await _loop_connection(client, q)
    sent = here.nc.stats["out_msgs"]
    job = await q.enqueue(jobs.add, 2, 3)
    assert here.nc.stats["out_msgs"] == sent + 2
    client.wait_stored_sync(job.job_id)
    assert client.result_sync(job.job_id, 30) == 5


async def test_a_direct_enqueue_never_acknowledged_fails_its_handle_then_the_next_call(client, frozen):
    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    frozen()
    sent = here.nc.stats["out_msgs"]
    job = await q.enqueue(jobs.add, 1, 2)  # returns at once: written, not acknowledged
    assert here.nc.stats["out_msgs"] == sent + 2
    with pytest.raises(JobNotStoredError, match=job.job_id):
        await client.wait_stored(job.job_id)
    with pytest.raises(JobNotStoredError, match=job.job_id):
        await q.enqueue(jobs.add, 3, 4)  # the next call reports it (once)
    with pytest.raises(JobNotStoredError, match=job.job_id):
        await client.status(job.job_id)  # the handle keeps failing


async def test_a_burst_after_a_job_sent_from_the_loop_is_stored_behind_it(client, monkeypatch):
    # One job at a time goes out on this loop's connection; jobs enqueued while it is in flight are
    # handed to the background loop, which writes them once that job is stored. The loop's write is
    # held back here (a congested socket), so without that wait they would be stored before it.
    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    loop = asyncio.get_running_loop()
    write_now = here.write_now
    monkeypatch.setattr(here, "write_now", lambda cmds: loop.call_later(0.2, write_now, cmds))
    sent = here.nc.stats["out_msgs"]
    handles = []
    for round_ in range(3):
        await client.flush()  # nothing in flight: the next job goes out on this loop's connection
        handles += [await q.enqueue(jobs.add, round_, i) for i in range(5)]
    await client.flush()
    assert here.nc.stats["out_msgs"] - sent == 2 * 3, "one job per round from the loop's connection"
    seqs = [h.sequence for h in handles]
    assert seqs == sorted(seqs), "a job was stored before one enqueued earlier"


async def test_a_job_waits_for_jobs_handed_over_before_it_to_be_written(client, monkeypatch):
    # A job handed to the background loop and not written yet: a job enqueued after it must not
    # overtake it on this loop's connection (it is handed over behind it instead).
    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    monkeypatch.setattr(client, "_send_outbox", lambda: None)  # the background loop is slow to send
    first = q.enqueue_sync(jobs.add, 1, 0)  # (a blocking call's enqueue: handed over)
    sent = here.nc.stats["out_msgs"]
    second = await q.enqueue(jobs.add, 2, 0)
    assert here.nc.stats["out_msgs"] == sent, "the second job overtook the first"
    monkeypatch.undo()
    call_soon(client._send_outbox)  # the background loop sends what was held
    await client.flush()
    assert first.sequence < second.sequence


async def test_an_acknowledgement_expected_from_another_thread_that_never_comes_fails_in_time(settings):
    # Nothing else is in flight on the receiving connection, so no timer runs there yet: the
    # registration from another thread must arm one.
    import threading

    from naq_nb.core.broker import Broker
    from naq_nb.core.errors import PublishTimeoutError

    b = await Broker.connect(settings=settings.with_(publish_timeout=0.5))
    try:
        await b.ensure_layout()
        await (await b.publish_async(b.layout.kv_subject(b.layout.status_bucket, "warm"), b"{}"))  # acks subscribed

        async def no_timer() -> bool:
            return b.acks._expiry is None  # the warm publish's timer ran out

        await eventually(no_timer, 10, "no expiry timer armed")
        outcome: asyncio.Future = asyncio.get_running_loop().create_future()
        slot = b.reserve_ack()
        assert slot is not None
        thread = threading.Thread(target=b.expect_ack, args=(slot[0], "a publish never made", outcome.set_result))
        thread.start()
        thread.join(10)
        fut = await asyncio.wait_for(outcome, 10)
        with pytest.raises(PublishTimeoutError, match="a publish never made"):
            fut.result()
    finally:
        await b.close()


async def test_a_job_too_big_to_leave_within_the_call_is_handed_over(client):
    # On a real link the socket takes only so much at once; the rest would wait for this loop, which
    # a blocking call right after would hold: such a job goes to the background loop instead.
    from naq_nb.core.jobsend import DIRECT_LIMIT

    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    sent = here.nc.stats["out_msgs"]
    job = await q.enqueue(jobs.add, b"x" * DIRECT_LIMIT, b"")
    await client.wait_stored(job.job_id)
    assert here.nc.stats["out_msgs"] == sent
    small = await q.enqueue(jobs.add, b"x", b"")
    assert here.nc.stats["out_msgs"] == sent + 2
    await client.wait_stored(small.job_id)


async def test_a_cancelled_enqueue_sends_nothing(client):
    q = Queue("nobody", client=client)
    here = await _loop_connection(client, q)
    count = await q.count()
    sent = here.nc.stats["out_msgs"]
    task = asyncio.ensure_future(q.enqueue(jobs.add, 1, 2))
    await asyncio.sleep(0)  # the enqueue runs up to its first pause
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert here.nc.stats["out_msgs"] == sent and client._stores.in_flight == 0
    await client.flush()
    assert await q.count() == count


def test_jobs_handed_over_wait_for_every_job_sent_on_a_callers_loop(client):
    # Two loops each sent one job on their own connection (both still in flight): a job handed over
    # after them is written only once both are stored.
    import concurrent.futures

    from naq_nb.client.loop import run_sync

    async def turn() -> None:  # one pass of the background loop: what it was asked to do before has run
        return None

    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    first, second = concurrent.futures.Future(), concurrent.futures.Future()
    client._direct |= {first, second}
    bg = client._broker
    sent = bg.nc.stats["out_msgs"]
    job = q.enqueue_sync(jobs.add, 1, 0)
    run_sync(turn(), 10)
    assert bg.nc.stats["out_msgs"] == sent
    first.set_result(None)
    run_sync(turn(), 10)
    assert bg.nc.stats["out_msgs"] == sent, "written before the second loop's job was stored"
    second.set_result(None)
    client.wait_stored_sync(job.job_id)
    assert bg.nc.stats["out_msgs"] == sent + 2


async def test_every_job_the_sender_waits_for_is_one_that_was_sent(client, monkeypatch):
    # A job that turns out not to go direct (too big) must leave nothing behind for the background
    # sender to wait on: it would wait forever, and every job handed over after it with it.
    from naq_nb.core.jobsend import DIRECT_LIMIT

    q = Queue("nobody", client=client)
    await _loop_connection(client, q)
    added: list = []

    class Recorded(set):
        def add(self, fut) -> None:
            added.append(fut)
            super().add(fut)

    monkeypatch.setattr(client, "_direct", Recorded())
    big = await q.enqueue(jobs.add, b"x" * DIRECT_LIMIT, b"")
    await client.wait_stored(big.job_id)
    small = await q.enqueue(jobs.add, b"x", b"")
    await client.wait_stored(small.job_id)
    assert len(added) == 1 and all(f.done() for f in added)


def test_a_direct_store_that_never_ends_holds_the_sender_back_only_so_long(client):
    # A backstop: even a store future nobody resolves delays the jobs handed over after it by a bound.
    import concurrent.futures

    from naq_nb.client.loop import run_sync

    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()
    stuck: concurrent.futures.Future = concurrent.futures.Future()
    client._direct.add(stuck)
    try:
        job = q.enqueue_sync(jobs.add, 1, 0)
        run_sync(client.flush(), 30)  # publish timeout 1 s: the sender goes on after 3 s
        assert client.status_sync(job.job_id)["status"] == "queued"
    finally:
        stuck.set_result(None)  # (without the bound, let the sender go so the test ends)


def test_a_loop_that_ended_leaves_no_expected_push_behind(client):
    # Nothing will come to its connection; an entry would also keep the closed loop alive.
    q = Queue("nobody", client=client)
    q.enqueue_sync(jobs.add, 0, 0)
    client.flush_sync()

    async def one_loop() -> str:
        await client.broker_here()
        return (await q.enqueue(jobs.add, 1, 2)).job_id  # sent on this loop's connection, never run

    job_id = asyncio.run(one_loop())
    assert job_id not in client._inbox._expected


async def test_close_ends_the_wait_for_pushes_to_its_connections(client):
    q = Queue("nobody", client=client)
    await _loop_connection(client, q)
    job = await q.enqueue(jobs.add, 1, 2)
    assert client._inbox.expects(job.job_id)
    await client.close()
    assert not client._inbox.expects(job.job_id)  # a read after close reads the bucket at once


@pytest.mark.parametrize("path", ["direct", "handed-over"])
async def test_a_stored_job_whose_queued_record_is_refused_is_not_reported_lost(client, broker, caplog, path):
    # The status bucket refuses the record (too big for it here; a full disk in life), the job message
    # is stored: the job runs, so its handle must not say "not stored" (a user would enqueue it again).
    q = Queue("norecord", client=client)
    await _loop_connection(client, q)  # both connections up (one job stored)
    stream = broker.layout.kv_stream(broker.layout.status_bucket)  # (this loop's own connection)
    cfg = (await broker.js.stream_info(stream)).config
    cfg.max_msg_size = 64
    await broker.js.update_stream(cfg)
    if path == "direct":
        job = await q.enqueue(jobs.add, 1, 2)
    else:
        job = await asyncio.to_thread(q.enqueue_sync, jobs.add, 1, 2)
    await client.wait_stored(job.job_id)
    await client.flush()
    assert await q.count() == 2
    assert f"job {job.job_id} is stored but its queued record was not" in caplog.text


@pytest.mark.parametrize("path", ["direct", "handed-over"])
async def test_a_job_the_server_refuses_is_reported_refused_not_in_doubt(client, broker, path):
    # A full stream answers with an error: the job is certainly not stored, unlike a missing answer.
    q = Queue("refused", client=client)
    await _loop_connection(client, q)
    cfg = (await broker.js.stream_info(broker.layout.jobs_stream)).config
    cfg.max_msgs, cfg.discard = 1, api.DiscardPolicy.NEW  # (the one job above fills it)
    await broker.js.update_stream(cfg)
    if path == "direct":
        job = await q.enqueue(jobs.add, 1, 2)
    else:
        job = await asyncio.to_thread(q.enqueue_sync, jobs.add, 1, 2)
    with pytest.raises(JobNotStoredError, match=f"job {job.job_id} .* was refused by the server, so it is not stored"):
        await client.wait_stored(job.job_id)
    with pytest.raises(JobNotStoredError):
        await client.flush()  # reported once to the next call too
