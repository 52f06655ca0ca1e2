"""The scheduler against a real nats-server: timing, cron ticks, repeat, control, misfires, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from datetime import datetime, timedelta

import pytest

import naq_nb as nq
from naq_nb.core.errors import ConfigurationError, JobNotFoundError, SerializationError
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result
from naq_nb.core.scheduler import Scheduler
from naq_nb.core.schedules import (
    ScheduleNotFoundError, list_schedules, make_schedule, save_schedule,
)
from naq_nb.core.envelope import HEADER_META
from naq_nb.core.broker import Broker

import jobs
from helpers import Services, eventually


async def wait_until(pred, timeout=15.0, what="condition"):
    return await eventually(pred, timeout, what, 0.05)


@pytest.fixture
async def start_scheduler(settings):
    services = Services()

    async def _start(**kw) -> Scheduler:
        return await services.start(Scheduler(settings=kw.pop("settings", settings), **kw))

    yield _start
    await services.stop_all(graceful=True)


async def stored(broker, queue, T0, cron=None, interval=None, repeat=None, when=None, misfire="once", fn=jobs.add):
    job = Queue(broker, queue).make_job(fn, (1, 2))
    s, body = make_schedule(job, broker, cron=cron, interval=interval, repeat=repeat, when=when,
                            misfire=misfire, now=T0)
    await save_schedule(broker, s, body)
    return s


async def queued_ids(broker, queue="default") -> list[str]:
    """Ids of the job messages in ``queue``'s subject, in stream order (no consumer needed)."""
    lay = broker.layout
    info = await broker.js.stream_info(lay.jobs_stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            msg = await broker.js.get_msg(lay.jobs_stream, seq)
            if msg.subject == lay.queue_subject(queue):
                ids.append(json.loads(msg.headers[HEADER_META])["id"])
    return ids


# --- stepping with an injected clock ------------------------------------------------

async def test_cron_with_seconds_fires_once_per_tick(broker, settings):
    T0 = float(int(time.time())) + 0.25
    s = await stored(broker, "cronq", T0, cron="* * * * * *")  # six fields: every second
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    assert await sch.tick(T0 + 0.5) == []                      # not due yet: nothing early
    first = await sch.tick(T0 + 0.8)
    assert first == [f"{s.id}-{int((T0 + 0.75) * 1000)}"]
    assert await sch.tick(T0 + 0.9) == []                      # the same tick never fires twice
    more = await sch.tick(T0 + 3.8)                           # three more seconds: three more fires
    assert len(more) == 3 and len(set(more + first)) == 4
    assert await queued_ids(broker, "cronq") == first + more
    stored_s = (await list_schedules(broker))[0]
    assert stored_s.runs == 4 and stored_s.next_run == pytest.approx(T0 + 4.75)


async def test_interval_repeat_stops_after_n(broker, settings):
    T0 = time.time()
    await stored(broker, "rq", T0, interval=1.0, repeat=3)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    fired = []
    for k in range(1, 7):
        fired += await sch.tick(T0 + k + 0.01)
    assert len(fired) == 3
    assert await list_schedules(broker) == []                  # finished schedules are removed
    assert len(await queued_ids(broker, "rq")) == 3


@pytest.mark.parametrize("policy,expected", [("once", 1), ("skip", 0), ("all", 101)])
async def test_misfire_policies_after_long_downtime(broker, settings, policy, expected):
    T0 = time.time() - 20000
    s = await stored(broker, "mq", T0, interval=100.0, misfire=policy)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    now = T0 + 100 + 10050                                     # 101 occurrences missed, all beyond the grace
    fired = await sch.tick(now)
    assert len(fired) == expected
    after = (await list_schedules(broker))[0]
    assert after.next_run == pytest.approx(T0 + 100 + 10100)   # then on with the calendar, not a storm
    assert after.id == s.id


async def test_not_leader_does_not_fire(broker, settings):
    T0 = time.time()
    await stored(broker, "lq", T0, when=T0)
    a = Scheduler(settings=settings, broker=broker, instance_id="a")
    b = Scheduler(settings=settings, broker=broker, instance_id="b")
    await a.prepare()
    await b.prepare()
    assert a.is_leader and not b.is_leader
    assert await b.tick(T0 + 1) == []
    assert len(await a.tick(T0 + 1)) == 1


async def test_a_burst_of_due_schedules_fires_in_bounded_ticks_each_under_the_lease(broker, settings, monkeypatch):
    """15,000 delayed jobs due at once made one tick of 40 s (9 s of it a quadratic loop that froze the
    event loop: no lease renewal), fired on after the lease had lapsed. Now a tick fires a bounded
    batch and the next one checks the lease again."""
    import naq_nb.core.scheduler as scheduler_mod
    monkeypatch.setattr(scheduler_mod, "FIRES_PER_TICK", 20, raising=False)
    T0 = time.time()
    q = Queue(broker, "bq")
    made = [make_schedule(q.make_job(jobs.add, (i, 0)), broker, when=T0, now=T0) for i in range(50)]
    await asyncio.gather(*(save_schedule(broker, s, body) for s, body in made))
    sch = Scheduler(settings=settings, broker=broker, instance_id="burst")
    await sch.prepare()
    assert sch.is_leader
    first = await sch.tick(T0 + 0.1)
    second = await sch.tick(T0 + 0.2)
    assert len(first) == len(second) == 20
    assert await sch.tick(T0 + sch.lease_ttl) == []             # the lease lapsed: the rest waits for it
    await sch.elect_once(T0 + sch.lease_ttl)
    rest = await sch.tick(T0 + sch.lease_ttl + 0.1)
    assert sorted(first + second + rest) == sorted(s.id for s, _ in made)
    assert sorted(await queued_ids(broker, "bq")) == sorted(s.id for s, _ in made)


@pytest.mark.parametrize("lost", ["leader", "status", "jobs"])
async def test_a_stream_deleted_under_a_running_scheduler_is_made_again(settings, lost):
    """The leader bucket deleted by hand left the lease unrenewable ("no response from stream" every
    second) and the scheduler never fired again; the status bucket or the jobs stream, every tick
    failed. Only a deleted schedules bucket was noticed. Now any of them is made again."""
    from naq_nb.core.settings import Settings
    # (this test makes the layout: the leader bucket gets this short lease as its TTL)
    st = Settings.from_env(environ={}, nats_url=settings.nats_url, prefix=settings.prefix, leader_ttl=3.0)
    b = await Broker.connect(settings=st)
    await b.ensure_layout()
    sch = await Services().start(Scheduler(settings=st, instance_id="alone"))
    try:
        assert sch.is_leader and sch.lease_ttl == 3.0
        s = await stored(b, "gq", time.time(), interval=0.3)
        lay = b.layout
        await wait_until(lambda: _count_at_least(b, "gq", 1), 10, "a first fire")
        name = {"leader": lay.kv_stream(lay.leader_bucket), "status": lay.kv_stream(lay.status_bucket),
                "jobs": lay.jobs_stream}[lost]
        await b.js.delete_stream(name)
        since = time.time() + sch.lease_ttl  # past the lease the scheduler held when the bucket went
        # (nats-server 2.9 answers no KV read of a deleted bucket: the scheduler learns it after 10 s)
        await wait_until(lambda: _fired_since(b, s.id, since, 3), 40, "fires again after the deletion")
    finally:
        sch.request_stop()
        await asyncio.wait_for(_stopped(sch), 15)
        await b.close()


async def _stopped(sch) -> None:
    while sch.broker is not None and not sch.broker.nc.is_closed:
        await asyncio.sleep(0.05)


async def _fired_since(b, sid: str, since: float, n: int) -> bool:
    with contextlib.suppress(Exception):  # the stream may be gone until it is made again
        dues = [int(i.rsplit("-", 1)[1]) / 1000 for i in await queued_ids(b, "gq") if i.startswith(sid)]
        return sum(d > since for d in dues) >= n
    return False


async def test_a_pause_racing_a_fire_keeps_the_run_counted(broker, settings):
    """A pause (or a change of repeat) landing while the leader fired: its update lost the race and the
    fire was never counted, nor the calendar moved on. Resumed, a repeat=2 schedule ran 3 times."""
    from naq_nb.core.schedules import change_schedule
    T0 = time.time()
    s = await stored(broker, "pq", T0 - 1, interval=1.0, repeat=2)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()                                  # (no watch loop: the pause is not seen before the fire)
    await change_schedule(broker, s.id, "pause")
    first = await sch.tick(T0 + 0.01)
    assert len(first) == 1
    row = (await list_schedules(broker))[0]
    assert row.paused and row.runs == 1 and row.last_job_id == first[0]
    assert row.next_run == pytest.approx(s.next_run + 1.0)  # the fired occurrence is behind it
    await change_schedule(broker, s.id, "resume")
    await _the_last_run_fires_once(broker, settings, first)


async def _the_last_run_fires_once(broker, settings, first: list) -> None:
    """A new leader fires a repeat=2 schedule's second run once, then the schedule ends."""
    sch2 = Scheduler(settings=settings, broker=broker, ha=False)
    await sch2.prepare()
    later = []
    for k in range(1, 5):
        later += await sch2.tick(time.time() + k)
    assert len(later) == 1 and len(set(first + later)) == 2   # two runs in all, as repeat=2 says
    assert await list_schedules(broker) == []


async def test_a_pause_and_resume_racing_a_fire_keep_the_run_counted(broker, settings):
    """Paused and resumed while the leader fired (its in-memory record the one before both): the resume
    moved next_run on (a past due time is not released), so the fire took the record for another
    calendar and never counted its run. A repeat=2 schedule then ran 3 times."""
    from naq_nb.core.schedules import change_schedule
    T0 = time.time() - 60                                # due a minute ago: the resume moves next_run on
    s = await stored(broker, "prq", T0 - 1, interval=1.0, repeat=2)
    sch = Scheduler(settings=settings, broker=broker, ha=False, clock=lambda: T0)
    await sch.prepare()                                  # (no watch loop: neither change is seen before the fire)
    await change_schedule(broker, s.id, "pause")
    await change_schedule(broker, s.id, "resume")
    first = await sch.tick(T0 + 0.01)
    assert len(first) == 1
    row = (await list_schedules(broker))[0]
    assert not row.paused and row.runs == 1 and row.last_job_id == first[0]
    assert row.next_run > T0 + 30                         # the resume's next run stands
    await _the_last_run_fires_once(broker, settings, first)


async def test_a_scheduler_whose_connection_closes_for_good_stops_with_an_error(settings):
    """nats-py closes a connection for good when the server cuts it (a protocol violation) or its
    reconnects run out: the scheduler sat alive for ever, every lease step failing, firing nothing,
    so no supervisor restarted it. It stops now, as a worker does (`naq scheduler` exits 1)."""
    from naq_nb.core.errors import NaqConnectionError
    sch = Scheduler(settings=settings, instance_id="cut")
    run = asyncio.ensure_future(sch.run())
    await wait_until(lambda: _started(sch), 15, "started")
    await sch.broker.nc.close()  # as nats-py does when it gives up
    with pytest.raises(NaqConnectionError, match="scheduler cut: its NATS connection was closed for good"):
        await asyncio.wait_for(run, 15)


async def _started(sch) -> bool:
    return sch.started is not None and sch.started.is_set()


async def test_a_fire_that_fails_names_its_schedule(tmp_path, naq_prefix):
    """A schedule stored while the server took 1 MB, the server back with max_payload 64 KB: every tick
    failed with "nats: maximum payload exceeded" twice a second, naming no schedule."""
    from naq_nb.core.server import EmbeddedServer
    from naq_nb.core.settings import Settings
    store = tmp_path / "js"
    srv = EmbeddedServer(store_dir=store, max_payload=1 << 20).start()
    try:
        st = Settings.from_env(environ={}, nats_url=srv.url, prefix=naq_prefix)
        b = await Broker.connect(settings=st)
        await b.ensure_layout()
        T0 = time.time()
        big, body = make_schedule(Queue(b, "zq").make_job(jobs.echo_value, ("x" * 200_000,)), b, when=T0, now=T0)
        await save_schedule(b, big, body)
        small = await stored(b, "zq", T0, when=T0)
        await b.close()
    finally:
        srv.stop()
    srv = EmbeddedServer(store_dir=store, max_payload=1 << 16).start()
    try:
        st = st.with_(nats_url=srv.url)
        sch = Scheduler(settings=st, ha=False)
        await sch.prepare()
        with pytest.raises(Exception, match=f"schedule '{big.id}' .*not fired.*maximum payload"):
            await sch.tick(T0 + 1)
        assert small.id not in sch.schedules                 # the other one fired all the same
        await sch.shutdown()
    finally:
        srv.stop()

async def test_a_schedule_whose_fire_keeps_failing_backs_off_and_says_why(broker, settings):
    """A schedule no stream takes (its fire fails each time) was tried on every tick, twice a second for
    ever, and nothing in its record said so. Now it waits 0.5 s, then twice as long after each failure,
    its record and status record count the failures and keep the error, and a fire that succeeds clears both."""
    from naq_nb.core.scheduler import FireError
    T0 = time.time()
    s = await stored(broker, "fq", T0, interval=1.0)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    await broker.js.delete_stream(broker.layout.jobs_stream)   # its job goes nowhere: every fire fails
    tries, t = [], s.next_run
    while t < s.next_run + 40:                                 # 40 s of the injected clock, 0.1 s a step
        with contextlib.suppress(FireError):
            await sch.tick(t)
            t += 0.1
            continue
        tries.append(t)
        t += 0.1
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert len(tries) == 7 and gaps == pytest.approx([0.5, 1, 2, 4, 8, 16], abs=0.11), tries
    row = (await list_schedules(broker))[0]
    assert row.failures == 7 and "no response from stream" in row.last_error
    assert row.to_row()["failures"] == 7 and row.runs == 0
    rec = await get_status(broker, s.id)
    assert rec["status"] == "scheduled" and rec["failures"] == 7 and "no response from stream" in rec["error"]
    broker.layout_lost()
    await broker.ensure_layout()                               # the stream back: the next try fires
    assert await sch.tick(tries[-1] + 31.9) == []              # (still waiting: 32 s after the 7th)
    assert await sch.tick(tries[-1] + 32.1)
    row = (await list_schedules(broker))[0]
    assert row.failures == 0 and row.last_error is None and row.runs > 0
    rec = await get_status(broker, s.id)
    assert "error" not in rec and "failures" not in rec


# --- the public API with a running scheduler and worker -------------------------------

async def test_enqueue_in_runs_on_time_not_early(broker, settings, start_scheduler, start_worker):
    await start_scheduler()
    await start_worker()
    job = await nq.enqueue_in(0.6, jobs.add, 2, 3, nats_url=settings.nats_url)
    st = await get_status(broker, job.job_id)
    assert st["status"] == "scheduled" and st["due_at"] == pytest.approx(time.time() + 0.6, abs=0.5)
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 5
    st = await get_status(broker, job.job_id)
    assert st["enqueued_at"] >= st["due_at"]                   # never early
    assert st["enqueued_at"] - st["due_at"] < 2.0              # and not wildly late (a bound, not a benchmark)


async def test_enqueue_at_in_the_past_runs_at_once(broker, settings, start_scheduler, start_worker):
    await start_scheduler()
    await start_worker()
    naive_past = datetime.utcnow() - timedelta(hours=1)       # naive = UTC
    job = nq.enqueue_at_sync(naive_past, jobs.add, 1, 1, nats_url=settings.nats_url)
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 2


async def test_interval_repeat_runs_exactly_n_times(broker, settings, start_scheduler, start_worker, tmp_path):
    await start_scheduler()
    await start_worker()
    log = tmp_path / "runs.txt"
    job = await nq.schedule(jobs.mark, str(log), "tick", interval=0.3, repeat=3, nats_url=settings.nats_url)

    async def finished():
        return not await list_schedules(broker) and log.exists() and len(log.read_text().split()) >= 3
    await wait_until(finished, 20, "three runs and the schedule's end")
    st = await get_status(broker, job.job_id)
    assert st["status"] == "succeeded" and st["runs"] == 3
    assert log.read_text().split() == ["tick"] * 3


async def test_pause_resume_modify_cancel(broker, settings, start_scheduler):
    sch = await start_scheduler()
    url = settings.nats_url
    job = await nq.schedule(jobs.add, 1, 2, interval=3600, nats_url=url)
    row = await nq.pause_scheduled_job(job.job_id, nats_url=url)
    assert row["paused"] and row["status"] == "paused"
    await wait_until(lambda: _async(sch.next_due() is None), 5, "the scheduler to see the pause")
    row = await nq.resume_scheduled_job(job, nats_url=url)
    assert not row["paused"]
    row = await nq.modify_scheduled_job(job.job_id, nats_url=url, interval=7200)
    assert row["interval"] == 7200 and row["next_run"] == pytest.approx(time.time() + 7200, abs=5)
    assert await nq.cancel_scheduled_job(job.job_id, nats_url=url) is True
    assert (await get_status(broker, job.job_id))["status"] == "cancelled"
    with pytest.raises(JobNotFoundError):
        await nq.cancel_scheduled_job(job.job_id, nats_url=url)


async def test_cancel_job_of_a_schedule_ends_its_calendar(broker, settings, start_scheduler):
    """cancel_job (and `naq cancel`) said "cancelled" of a schedule's id, and the schedule kept firing:
    only its status record was marked, and the next fire wrote "scheduled" over it."""
    from naq_nb.core.cancel import cancel_job
    sch = await start_scheduler()
    job = await nq.schedule(jobs.add, 1, 2, interval=0.3, queue_name="cq", nats_url=settings.nats_url)
    await wait_until(lambda: _count_at_least(broker, "cq", 1), 10, "a first fire")
    assert await cancel_job(broker, job.job_id) is True
    await wait_until(lambda: _async(sch.next_due() is None), 10, "the scheduler to drop the schedule")
    assert await list_schedules(broker) == [] and (await get_status(broker, job.job_id))["status"] == "cancelled"


async def _count_at_least(broker, queue, n):
    return len(await queued_ids(broker, queue)) >= n


async def test_a_delayed_job_whose_record_says_cancelled_is_never_fired(broker, settings):
    """A worker drops a cancelled job by the cancel notice it heard; one started after the cancel
    never heard it and ran the job. Whatever left the calendar entry behind (a cancel racing the
    fire), the scheduler reads the record before firing and does not send it."""
    from naq_nb.core.status import decode_status, encode_status, with_status
    from naq_nb.core.job import JobStatus
    T0 = time.time()
    s = await stored(broker, "dq", T0, when=T0 + 1.0)
    kv = await broker.kv(broker.layout.status_bucket)
    entry = await kv.get(s.id)
    rec = decode_status(entry.value)
    await kv.update(s.id, encode_status(with_status(rec, JobStatus.CANCELLED)), last=entry.revision)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    await sch.tick(T0 + 1.01)
    assert await queued_ids(broker, "dq") == [] and (await get_status(broker, s.id))["status"] == "cancelled"


@pytest.mark.parametrize("moved_on", ["running", "succeeded", "failed", "waiting", "retrying"])
async def test_an_occurrence_that_already_ran_is_not_fired_again(broker, settings, moved_on):
    """A leader killed after publishing but before moving the record on, back after JetStream's
    de-duplication window (2 min): the status says the job was published, so the re-fire must not
    be (no copy is dropped any more, the job would run twice). Built by hand: status moved on,
    record still due, no message left in the stream (as after the window)."""
    from naq_nb.core.status import decode_status, encode_status, with_status
    from naq_nb.core.job import JobStatus
    T0 = time.time()
    once = await stored(broker, "aq", T0, when=T0)
    cron = await stored(broker, "aq", T0 - 0.6, cron="* * * * * *")
    kv = await broker.kv(broker.layout.status_bucket)
    entry = await kv.get(once.id)
    await kv.update(once.id, encode_status(with_status(decode_status(entry.value), JobStatus(moved_on))),
                    last=entry.revision)
    cron_jid = f"{cron.id}-{int(round(cron.next_run * 1000))}"
    await kv.create(cron_jid, encode_status(with_status(decode_status(entry.value), JobStatus(moved_on))))
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    await sch.tick(max(T0, cron.next_run) + 0.01)
    assert await queued_ids(broker, "aq") == []
    assert (await get_status(broker, once.id))["status"] == moved_on
    assert (await get_status(broker, cron_jid))["status"] == moved_on
    assert [s.id for s in await list_schedules(broker)] == [cron.id]   # the calendar moved on all the same
    assert (await list_schedules(broker))[0].next_run == pytest.approx(cron.next_run + 1)


async def test_a_job_waiting_on_a_schedule_runs_as_the_schedule_ends(broker, settings, start_worker):
    """It waited for the workers' sweep of the waiting stream (30 s) instead."""
    T0 = time.time()
    s = await stored(broker, "default", T0, interval=1.0, repeat=1)
    dependent = await Queue(broker).configure(depends_on=[s.id]).enqueue(jobs.add, 2, 2)
    await start_worker()
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    assert len(await sch.tick(T0 + 1.01)) == 1
    assert (await get_status(broker, s.id))["status"] == "succeeded"
    assert (await wait_for_result(broker, dependent.job_id, 10)).unwrap() == 4


async def _async(value):
    return value


async def test_modified_next_run_fires(broker, settings, start_scheduler, start_worker):
    await start_scheduler()
    await start_worker()
    url = settings.nats_url
    job = await nq.schedule(jobs.add, 4, 4, interval=3600, nats_url=url)
    row = await nq.modify_scheduled_job(job.job_id, nats_url=url, next_run=time.time() + 0.3)
    jid = f"{job.job_id}-{int(round(row['next_run'] * 1000))}"

    async def fired():
        with contextlib.suppress(JobNotFoundError):
            return await get_status(broker, jid)
    await wait_until(fired, 15, "the rescheduled run")
    assert (await wait_for_result(broker, jid, 15)).unwrap() == 8


async def test_schedules_survive_a_server_restart(own_nats_server, settings, start_scheduler, start_worker):
    url = settings.nats_url
    job = nq.enqueue_in_sync(1.0, jobs.add, 20, 22, nats_url=url)
    nq.close_sync_connections()
    own_nats_server.restart()
    await start_scheduler()
    await start_worker()
    assert await nq.fetch_job_result(job, nats_url=url, timeout=20) == 42
    nq.close_sync_connections()


# --- bad input: an error at the call, nothing stored -----------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(cron="61 * * * *"), "61 \\* \\* \\* \\*"),
    (dict(cron="* * *"), "3 fields"),
    (dict(cron="*/5 * * * *", interval=5), "exactly one|not both"),
    (dict(), "exactly one"),
    (dict(interval=0), "interval"),
    (dict(interval=-1), "interval"),
    (dict(interval=5, repeat=0), "repeat"),
    (dict(cron="* * * * *", timezone="Mars/Olympus"), "timezone"),
])
async def test_bad_schedules_raise_at_the_call(broker, settings, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        await nq.schedule(jobs.add, 1, 2, nats_url=settings.nats_url, **kwargs)
    assert await list_schedules(broker) == []


async def test_unserializable_function_fails_at_schedule(broker, settings):
    lock = threading.Lock()

    def holds_lock():
        return lock.locked()
    with pytest.raises(SerializationError, match="lock"):
        await nq.schedule(holds_lock, interval=5, nats_url=settings.nats_url)
    assert await list_schedules(broker) == []


async def test_controlling_unknown_schedule_raises(broker, settings):
    for call in (nq.pause_scheduled_job, nq.resume_scheduled_job, nq.cancel_scheduled_job):
        with pytest.raises(ScheduleNotFoundError, match="nope"):
            await call("nope", nats_url=settings.nats_url)
    with pytest.raises(JobNotFoundError):
        nq.modify_scheduled_job_sync("nope", nats_url=settings.nats_url, interval=3)


async def test_modify_rejects_unknown_fields(broker, settings):
    job = await nq.schedule(jobs.add, 1, 2, interval=60, nats_url=settings.nats_url)
    with pytest.raises(ConfigurationError, match="colour"):
        await nq.modify_scheduled_job(job.job_id, nats_url=settings.nats_url, colour="red")
    with pytest.raises(ConfigurationError, match="cron"):
        await nq.modify_scheduled_job(job.job_id, nats_url=settings.nats_url, cron="bad cron")
    assert len(await list_schedules(broker)) == 1


async def test_template_keeps_calendar_apart_from_function_kwargs(broker, settings, start_scheduler, start_worker):
    await start_scheduler()
    await start_worker()

    template = nq.Queue(nats_url=settings.nats_url).configure(timeout=30).after(0.1)
    job = await template.enqueue(jobs.add, a=1, b=41)
    assert (await wait_for_result(broker, job.job_id, 15)).unwrap() == 42
    from naq_nb.client.scheduling import ScheduledTemplate
    with pytest.raises(TypeError, match="colour"):
        ScheduledTemplate(nq.get_client(settings.nats_url), template.options, colour=1)


async def test_bad_times_and_policies_raise_at_the_call(broker, settings):
    url = settings.nats_url
    with pytest.raises(TypeError, match="delta must be seconds or a timedelta.*'soon'"):
        await nq.enqueue_in("soon", jobs.add, 1, 2, nats_url=url)
    with pytest.raises(TypeError, match="dt must be a datetime or epoch seconds.*'tomorrow'"):
        nq.enqueue_at_sync("tomorrow", jobs.add, 1, 2, nats_url=url)
    with pytest.raises(ConfigurationError, match="misfire must be one of"):
        await nq.schedule(jobs.add, 1, 2, interval=5, misfire="sometimes", nats_url=url)
    assert await list_schedules(broker) == []


async def test_a_delay_past_the_year_9999_is_named_as_the_delay(broker, settings):
    """It was refused as "when must be a time ..., not 1001796395857.59": an argument the caller
    never gave, with an epoch time they never typed."""
    url = settings.nats_url
    for call in (lambda: nq.enqueue_in(1e12, jobs.add, 1, 2, nats_url=url),
                 lambda: nq.enqueue_in(timedelta.max, jobs.add, 1, 2, nats_url=url),
                 lambda: nq.enqueue_in(-1e12, jobs.add, 1, 2, nats_url=url)):
        too_far = r"^delta (1e\+12 s|-1e\+12 s|999999999 days.*) from now .*9999"
        with pytest.raises(ConfigurationError, match=too_far) as err:
            await call()
        assert "when" not in str(err.value)
    with pytest.raises(ConfigurationError, match=r"^delay 1e\+12 s from now"):
        await nq.Queue(nats_url=url).configure().after(1e12).enqueue(jobs.add, 1, 2)
    nq.connect(url)
    with pytest.raises(ConfigurationError, match=r"^delay 1e\+12 s from now"):
        nq.options(delay=1e12).submit(jobs.add, 1, 2)
    assert await list_schedules(broker) == []


async def test_a_schedules_bucket_made_again_is_reloaded(broker, settings, start_scheduler, start_worker):
    """Its records start over at revision 1 in a new bucket; the old watch resumed past them."""
    sched = await start_scheduler(ha=False)
    assert await sched.resync_once() is False, "the bucket loaded is the one there"
    first = await stored(broker, "default", time.time(), interval=3600)
    async def in_calendar(sid: str) -> bool:
        return sid in sched.schedules

    async def fired() -> bool:
        return sched.fired >= 1

    await wait_until(lambda: in_calendar(first.id), what="the first schedule in the calendar")
    await broker.js.delete_stream(broker.layout.kv_stream(broker.layout.schedules_bucket))
    assert await sched.resync_once() is True
    assert first.id not in sched.schedules, "the deleted bucket's schedules are gone from the calendar"
    await start_worker()
    again = await stored(broker, "default", time.time(), when=time.time())  # due now
    await wait_until(lambda: in_calendar(again.id), what="a new schedule in the reloaded calendar")
    await wait_until(fired, what="the new schedule fired")


async def test_a_reload_that_fails_is_tried_again_and_two_checks_reload_once(
    broker, settings, start_scheduler, start_worker, monkeypatch
):
    from naq_nb.core import scheduler as scheduler_mod
    sched = await start_scheduler(ha=False)
    await broker.js.delete_stream(broker.layout.kv_stream(broker.layout.schedules_bucket))
    real_scan, calls = scheduler_mod.scan_bucket, []

    def failing_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the scan failed (a dropped connection)")
        return real_scan(*a, **kw)

    monkeypatch.setattr(scheduler_mod, "scan_bucket", failing_once)
    with pytest.raises(ConnectionError):
        await sched.resync_once()
    watches = [t for t in sched._tasks if not t.done()]
    outcomes = await asyncio.gather(sched.resync_once(), sched.resync_once())
    assert sorted(outcomes) == [False, True], "the failed reload is tried again, once"
    assert len([t for t in sched._tasks if not t.done()]) == len(watches), "one watch, not two"
    await start_worker()
    await stored(broker, "default", time.time(), when=time.time())

    async def fired() -> bool:
        return sched.fired >= 1

    await wait_until(fired, what="a schedule saved after the reload fired")


async def test_a_delayed_job_given_a_used_job_id_is_refused_at_the_call(broker, settings, start_scheduler,
                                                                       start_worker):
    """The second delayed job under an id whose job had run was dropped by JetStream as that job's copy
    when it fired (within the 2-minute de-duplication window), and its status read 'queued' for ever."""
    from naq_nb.core.errors import DuplicateJobError
    await start_scheduler()
    await start_worker()
    url = settings.nats_url
    await nq.Queue(nats_url=url).configure(job_id="nightly").after(0.2).enqueue(jobs.add, 1, 2)
    assert (await wait_for_result(broker, "nightly", 15)).unwrap() == 3
    with pytest.raises(DuplicateJobError, match="'nightly' is already used by a job that is succeeded"):
        await nq.Queue(nats_url=url).configure(job_id="nightly").after(0.2).enqueue(jobs.add, 3, 4)
    # An id taken by a job still in the queue is refused too; nothing already stored is touched.
    await Queue(broker, "idle").configure(job_id="waiting-one").enqueue(jobs.add, 5, 6)
    with pytest.raises(DuplicateJobError, match="'waiting-one' is already used by a job that is queued"):
        await nq.Queue(nats_url=url).configure(job_id="waiting-one").after(0.2).enqueue(jobs.add, 5, 6)
    assert (await get_status(broker, "nightly"))["status"] == "succeeded"
    assert (await get_status(broker, "waiting-one"))["status"] == "queued"
    assert (await wait_for_result(broker, "nightly", 1)).unwrap() == 3
    # A one-shot cancelled before it fired leaves its id free for the next.
    await nq.Queue(nats_url=url).configure(job_id="later").after(3600).enqueue(jobs.add, 1, 1)
    from naq_nb.core.schedules import change_schedule
    await change_schedule(broker, "later", "cancel")
    await nq.Queue(nats_url=url).configure(job_id="later").after(0.2).enqueue(jobs.add, 2, 2)
    assert (await wait_for_result(broker, "later", 15)).unwrap() == 4
