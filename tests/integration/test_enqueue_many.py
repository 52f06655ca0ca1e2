"""enqueue_many when the server does not store all of a batch: the call raises, naming how many jobs
were not stored (and which), waits for what was in flight, and leaves nothing silent."""

from __future__ import annotations

import asyncio
import threading

import pytest
from nats.js import api
from nats.js.errors import APIError

import jobs
from naq_nb.core.broker import server_has_fast_batches
from naq_nb import Queue
from naq_nb.client.client import Client
from naq_nb.core import queue as core_queue
from naq_nb.core.broker import Broker
from naq_nb.core.errors import JobNotFoundError, JobNotStoredError
from naq_nb.core.fastbatch import AHEAD, FLOW as FAST_FLOW
from naq_nb.core.kvscan import read_keys
from naq_nb.core.queue import FAST_MIN, get_status
from naq_nb.core.results import wait_for_result
from naq_nb.core.status import decode_status


async def _limit_jobs_stream(broker: Broker, max_msgs: int) -> None:
    """The jobs stream refuses new messages past ``max_msgs`` (a full stream, as a real one can be)."""
    cfg = (await broker.js.stream_info(broker.layout.jobs_stream)).config
    cfg.max_msgs, cfg.discard = max_msgs, api.DiscardPolicy.NEW
    await broker.js.update_stream(cfg)


async def test_a_batch_the_server_partly_refuses_raises_naming_what_was_not_stored(broker, monkeypatch):
    # Job by job (a server before 2.14, or a batch under FAST_MIN): each acknowledgement is awaited.
    monkeypatch.setattr(core_queue, "ENQUEUE_WINDOW", 10)
    monkeypatch.setattr(broker, "fast_batches", False)
    await _limit_jobs_stream(broker, 30)
    q = core_queue.Queue(broker, "full")
    made = [q.make_job(jobs.add, (i, 1)) for i in range(100)]
    # Job 31 is refused; 32-40 are in flight by then (window of 10) and refused too; 41-100 are never sent.
    with pytest.raises(JobNotStoredError, match=r"70 of 100 jobs were not stored: 10 not acknowledged .* 60 not sent"
                       ) as caught:
        await q.enqueue_jobs(made)
    assert isinstance(caught.value.__cause__, APIError), "the server's own refusal is the cause"
    assert caught.value.not_stored == [j.job_id for j in made[30:]]
    assert all(j.sequence for j in made[:30]) and not any(j.sequence for j in made[30:])
    await _only_the_first_queued(broker, q, made, 30)


async def _only_the_first_queued(broker: Broker, q: core_queue.Queue, made: list, n: int) -> None:
    """The queue holds the first ``n`` of ``made``, each with its queued record; the others (refused, or
    never sent) left no "queued" record behind."""
    assert await q.count() == n
    assert (await get_status(broker, made[n - 1].job_id))["status"] == "queued"
    for job in (made[n], made[(n + len(made)) // 2], made[-1]):
        with pytest.raises(JobNotFoundError):
            await get_status(broker, job.job_id)


async def test_a_single_job_refused_raises_its_own_error(broker):
    await _limit_jobs_stream(broker, 1)
    q = core_queue.Queue(broker, "full")
    await q.enqueue_many([(jobs.add, (1, 1), {})])
    with pytest.raises(APIError, match="maximum messages"):
        await q.enqueue_many([(jobs.add, (2, 1), {})])


async def test_the_handles_of_jobs_not_stored_raise_and_the_next_call_does_not(broker, settings):
    await _limit_jobs_stream(broker, 5)
    client = Client(settings=settings)
    try:
        with pytest.raises(JobNotStoredError, match="15 of 20 jobs were not stored") as caught:
            await Queue("full", client=client).enqueue_many(jobs.add, [(i, 1) for i in range(20)])
        missing = caught.value.not_stored
        assert len(missing) == 15
        with pytest.raises(JobNotStoredError, match="15 of 20"):
            await client.status(missing[0])  # its handle: not "no such job", not a wait
        await client.flush()  # reported once, by the call itself
    finally:
        await client.close()


async def _takes_fast_batches(settings) -> bool:
    b = await Broker.connect(settings=settings)
    try:
        await b.ensure_layout()
        return server_has_fast_batches(b)
    finally:
        await b.close()


async def test_a_fast_batch_the_server_partly_refuses_stores_a_prefix_and_names_the_rest(broker):
    if not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    assert broker.fast_batches, "a 2.14+ server: both streams allow batched publishes"
    await _limit_jobs_stream(broker, 30)
    q = core_queue.Queue(broker, "full")
    made = [q.make_job(jobs.add, (i, 1)) for i in range(200)]
    with pytest.raises(JobNotStoredError, match=r"170 of 200 jobs were not stored: .* the 30 before are stored"
                       ) as caught:
        await q.enqueue_jobs(made)
    assert "maximum messages" in str(caught.value), "the server's own reason is named"
    assert caught.value.not_stored == [j.job_id for j in made[30:]]
    await _only_the_first_queued(broker, q, made, 30)
    await _limit_jobs_stream(broker, -1)
    more = [q.make_job(jobs.add, (i, 2)) for i in range(FAST_MIN)]
    await q.enqueue_jobs(more)  # the next batch is taken whole
    assert await q.count() == 30 + FAST_MIN


async def test_a_fast_batch_stores_every_job_and_its_queued_record(broker, start_worker):
    if not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    assert broker.fast_batches, "a 2.14+ server: both streams allow batched publishes"
    for stream in broker.layout.fast_batch_streams():
        assert (await broker.js.stream_info(stream)).config.allow_batched
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(core_queue, "FAST_CHUNK", 300)  # several pairs of batches, the last one short
    try:
        q = core_queue.Queue(broker, "default")
        made = await q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(1000)])
    finally:
        monkeypatch.undo()
    assert all(j.sequence is None for j in made), "sent in batches (one by one, each would have a sequence)"
    records = await read_keys(broker, broker.layout.status_bucket, [j.job_id for j in made])
    assert len(records) == 1000 and {decode_status(v)["status"] for v in records.values()} == {"queued"}
    await start_worker(concurrency=8)
    values = [(await wait_for_result(broker, j.job_id, 60)).unwrap() for j in made[::97]]
    assert values == [i + 1 for i in range(0, 1000, 97)]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-batches", "job-by-job"])
def test_a_server_killed_mid_batch_fails_the_call_and_names_every_job_not_stored(own_nats_server, settings, fast,
                                                                                 monkeypatch):
    from naq_nb.core import broker as broker_mod
    if not fast:
        monkeypatch.setattr(broker_mod, "server_has_fast_batches", lambda b: False)
    elif not asyncio.run(_takes_fast_batches(settings)):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    # Fast batches hear of the lost connection and end there: the default 10 s bound is never reached
    # (the error says which). Job by job, each publish's own bound is what ends it.
    client = Client(settings=settings if fast else settings.with_(publish_timeout=2.0))
    made = [client.make_job(jobs.add, (i, 0), None, None) for i in range(20_000)]
    outcome: dict = {}

    def enqueue() -> None:
        try:
            client.enqueue_jobs_sync(made)
            outcome["returned"] = True
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    async def stored() -> int:
        b = await Broker.connect(settings=settings)
        try:
            await b.ensure_layout()
            return (await b.js.stream_info(b.layout.jobs_stream)).state.messages
        finally:
            await b.close()

    async def kill_when_under_way() -> int:
        b = await Broker.connect(settings=settings)
        await b.ensure_layout()
        try:
            for _ in range(1200):
                if (n := (await b.js.stream_info(b.layout.jobs_stream)).state.messages) >= 2000:
                    own_nats_server.kill()
                    return n
                await asyncio.sleep(0.05)
            raise AssertionError("the batch did not get under way")
        finally:
            await b.close(drain=False)

    t = threading.Thread(target=enqueue)
    try:
        t.start()
        before_kill = asyncio.run(kill_when_under_way())
        t.join(120)
        assert not t.is_alive(), "enqueue_many must raise within its publish timeout, not hang"
        err = outcome.get("error")
        assert isinstance(err, JobNotStoredError), outcome
        assert "of 20,000 jobs were not stored" in str(err)
        missing = set(err.not_stored)
        if fast:  # a fast batch's flow acks: a prefix of the jobs is stored, no job has its own sequence
            assert "the connection dropped before the server ended the batch" in str(err), err
            assert "not acknowledged within" not in str(err), "the batch waited out its timeout"
            acked = [j for j in made if j.job_id not in missing]
            assert acked == made[: len(acked)] and not any(j.sequence for j in made)
        else:
            acked = [j for j in made if j.sequence]
            assert len(acked) + len(missing) == len(made)
            assert missing.isdisjoint(j.job_id for j in acked)
        # Stored before the kill: acknowledged, or among the last window in flight (named: "may be stored").
        in_flight = core_queue.ENQUEUE_WINDOW if not fast else FAST_FLOW * (AHEAD + 1)
        assert missing and len(acked) >= before_kill - in_flight
        own_nats_server.restart()
        assert asyncio.run(stored()) >= len(acked), "every acknowledged job survived the kill"
    finally:
        t.join(120)
        try:
            client.close_sync()
        except JobNotStoredError:
            pass  # reported by the call already


@pytest.mark.parametrize("which", ["jobs", "status"])
async def test_a_stream_closed_to_batches_after_connect_is_sent_the_rest_job_by_job(broker, which):
    """An operator turns allow_batched off while the client believes in batches: the server refuses each
    message of that batch (nothing stored, exactly); the call goes on job by job and stores every job
    once, with its record, and later calls go job by job from the start."""
    if not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    assert broker.fast_batches
    lay = broker.layout
    stream = lay.jobs_stream if which == "jobs" else lay.kv_stream(lay.status_bucket)
    cfg = (await broker.js.stream_info(stream)).config
    await broker.js.update_stream(cfg.evolve(allow_batched=False))
    q = core_queue.Queue(broker, "closed")
    made = await q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(300)])
    assert not broker.fast_batches, "later calls go job by job at once"
    assert await q.count() == 300, "every job stored once"
    records = await read_keys(broker, lay.status_bucket, [j.job_id for j in made])
    assert len(records) == 300 and {decode_status(v)["status"] for v in records.values()} == {"queued"}
    more = await q.enqueue_many([(jobs.add, (i, 2), {}) for i in range(FAST_MIN)])
    assert all(j.sequence for j in more) and await q.count() == 300 + FAST_MIN


async def test_streams_made_before_fast_batches_are_opened_to_them_at_connect(broker, settings):
    if not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    for stream in broker.layout.fast_batch_streams():  # as an earlier naq_nb left them
        cfg = (await broker.js.stream_info(stream)).config
        assert not (await broker.js.update_stream(cfg.evolve(allow_batched=False))).config.allow_batched
    b = await Broker.connect(settings=settings)
    try:
        await b.ensure_layout()
        assert b.fast_batches
        for stream in b.layout.fast_batch_streams():
            assert (await b.js.stream_info(stream)).config.allow_batched
    finally:
        await b.close()


@pytest.mark.parametrize("fast", [False, True], ids=["job-by-job", "fast-batches"])
async def test_jobs_stored_whose_queued_records_are_refused_are_not_reported_lost(broker, monkeypatch, caplog,
                                                                                 fast):
    # Every job message is stored, but the status bucket refuses the records (here: too big for it;
    # in life, a full disk). The jobs will run: the call must not say "0 of N jobs were not stored".
    if fast and not server_has_fast_batches(broker):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    monkeypatch.setattr(broker, "fast_batches", fast)
    stream = broker.layout.kv_stream(broker.layout.status_bucket)
    cfg = (await broker.js.stream_info(stream)).config
    cfg.max_msg_size = 64
    await broker.js.update_stream(cfg)
    q = core_queue.Queue(broker, "norecords")
    made = [q.make_job(jobs.add, (i, 1)) for i in range(FAST_MIN if fast else 10)]
    await q.enqueue_jobs(made)
    assert await q.count() == len(made)
    assert "stored jobs have no queued record (they run" in caplog.text
