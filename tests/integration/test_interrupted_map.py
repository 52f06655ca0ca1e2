"""A Ctrl-C (or a task cancel) while ``nq.map`` / ``enqueue_many`` is still sending cancels the jobs it
had sent, as ``Executor.map`` cancels the work it has not finished: none is left running with no
handle. Every job whose record went out ends ``cancelled`` (record and result), none stays in its
queue, and a worker started afterwards runs none of them.

The interrupt lands at a chosen message (a hook on the broker's sends), not after a delay: the
``N``-th job message is not sent; the interrupt is made and the send waits to be cancelled. Both
ways a batch goes are covered: fast-ingest batches (nats-server 2.14+) and job by job."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import naq_nb as nq
from naq_nb.client.loop import run_async, run_sync
from naq_nb.core.broker import server_has_fast_batches
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result

import jobs
from helpers import ROOT, eventually, wait_until

N = 300  # job messages sent before the interrupt
TOTAL = 1000


def interrupt_sending(b, queue: str, interrupt, n: int = N) -> list[str]:
    """Patch broker ``b``'s sends so that the ``n+1``-th job message to ``queue`` is not sent:
    ``interrupt()`` runs on the loop instead and the send waits until it is cancelled. Returns the
    ids of the jobs whose queued record went out (in the fast path one more record than jobs)."""
    records = b.layout.kv_subject(b.layout.status_bucket, "")
    subject = b.layout.queue_subject(queue)
    ids: list[str] = []
    sent: list[int] = []
    done: list[object] = []
    real = b.send

    async def send(to, payload, reply="", headers=None):
        if not done and to.startswith(records):
            ids.append(to[len(records):])
        elif not done and to == subject:
            if len(sent) == n:
                done.append(interrupt())
                await asyncio.get_running_loop().create_future()  # never sent; waits to be cancelled
            sent.append(1)
        return await real(to, payload, reply, headers)

    b.send = send
    return ids


async def all_cancelled(b, ids: list[str]) -> dict[str, str]:
    """Each job's status and result: ``{id: "status/result"}`` for those not cancelled in both."""
    odd = {}
    for jid in ids:
        status = (await get_status(b, jid)).get("status")
        result = await get_result(b, jid)
        if status != "cancelled" or result is None or result.status != "cancelled":
            odd[jid] = f"{status}/{result.status if result else None}"
    return odd


def fast_or_not(b, way: str, monkeypatch) -> None:
    if way == "batches" and not server_has_fast_batches(b):
        pytest.skip("fast-ingest batches need nats-server 2.14+")
    if way == "one by one":
        monkeypatch.setattr(b, "fast_batches", False)  # as a server before 2.14


@pytest.mark.parametrize("way", ["batches", "one by one"])
def test_ctrl_c_during_nq_map_cancels_every_job_it_sent(nb_client, thread_worker, way, monkeypatch, caplog):
    b = run_sync(nb_client.broker())
    run_sync(b.ensure_layout())
    fast_or_not(b, way, monkeypatch)
    main = threading.main_thread().ident  # Ctrl-C to the thread that handles it, as a kernel interrupt
    ids = interrupt_sending(b, "default", lambda: signal.pthread_kill(main, signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level("WARNING", logger="naq_nb"), pytest.raises(KeyboardInterrupt):
            nq.map(jobs.add, range(TOTAL), [1] * TOTAL)
    finally:
        signal.signal(signal.SIGINT, previous)
    del b.send  # the class's own again
    assert N <= len(ids) < TOTAL, "interrupted part-way"
    # The call returned at the Ctrl-C; the jobs are cancelled on naq_nb's loop, then it says so.
    said = wait_until(lambda: [r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage()], 60)
    assert re.search(rf"of {TOTAL:,} jobs was interrupted after sending {len(ids)}: {len(ids)} cancelled$", said[0])
    assert run_sync(all_cancelled(b, ids)) == {}
    assert run_sync(Queue(b, "default").count()) == 0, "no job of the map is left to run"
    thread_worker()  # a worker that never heard the cancel notices runs none of them
    assert nq.submit(jobs.add, 1, 2).result(timeout=30) == 3
    assert run_sync(all_cancelled(b, ids)) == {}


async def test_a_cancelled_await_of_nq_map_async_cancels_every_job_it_sent(nb_client, caplog):
    # The caller's loop is not naq_nb's: its cancel reaches the publishing task on naq_nb's loop
    # through the future it awaits, and the caller's await ends at once.
    b = await run_async(nb_client.broker())
    await run_async(b.ensure_layout())
    caller = asyncio.get_running_loop()
    with caplog.at_level("WARNING", logger="naq_nb"):
        task = asyncio.create_task(nq.map_async(jobs.add, range(TOTAL), [1] * TOTAL))
        ids = interrupt_sending(b, "default", lambda: caller.call_soon_threadsafe(task.cancel))
        with pytest.raises(asyncio.CancelledError):
            await task

        async def said():
            return [r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage()]

        line = await eventually(said, 60, "the line saying what was cancelled")
    del b.send
    assert re.search(rf"after sending {len(ids)}: {len(ids)} cancelled$", line[0]), line[0]
    assert await run_async(all_cancelled(b, ids)) == {}
    assert await run_async(Queue(b, "default").count()) == 0


@pytest.mark.parametrize("way", ["batches", "one by one"])
async def test_a_cancelled_enqueue_many_cancels_what_it_sent_before_the_cancel_ends(broker, way, monkeypatch):
    fast_or_not(broker, way, monkeypatch)
    q = Queue(broker, "interrupted")
    task = asyncio.create_task(q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(TOTAL)]))
    ids = interrupt_sending(broker, "interrupted", task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    del broker.send
    assert N <= len(ids) < TOTAL
    # An async caller's cancel ends once its jobs are cancelled: nothing to wait for.
    assert await all_cancelled(broker, ids) == {}
    assert await q.count() == 0


def test_ctrl_c_during_a_delayed_nq_map_deletes_the_schedules_it_stored(nb_client, monkeypatch, caplog):
    import naq_nb.client.session as session_mod
    from naq_nb.core.schedules import ScheduleNotFoundError, load_schedule

    real, stored = session_mod.save_schedule, []
    main = threading.main_thread().ident

    async def save_then_interrupt(broker, s, body):
        if len(stored) == 5:
            signal.pthread_kill(main, signal.SIGINT)
            await asyncio.get_running_loop().create_future()  # not stored; waits to be cancelled
        stored.append(s.id)
        return await real(broker, s=s, body=body)

    monkeypatch.setattr(session_mod, "save_schedule", save_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level("WARNING", logger="naq_nb"), pytest.raises(KeyboardInterrupt):
            nq.options(delay=3600).map(jobs.add, range(20), [1] * 20)
    finally:
        signal.signal(signal.SIGINT, previous)
    said = wait_until(lambda: [r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage()], 60)
    # The sixth was being saved: it is counted as sent, and found not stored.
    assert said[0].endswith("of 20 jobs was interrupted after sending 6: 5 cancelled, 1 was not stored"), said[0]
    b = run_sync(nb_client.broker())
    for sid in stored:
        assert run_sync(get_status(b, sid))["status"] == "cancelled"
        with pytest.raises(ScheduleNotFoundError):
            run_sync(load_schedule(b, sid))


async def test_an_interrupted_enqueue_whose_server_is_gone_ends_within_its_bound_and_says_so(
    broker, own_nats_server, caplog
):
    """The clean-up of an interrupt must not hang: with the server gone, each request would wait out
    its own timeout. The first connection error ends the withdrawal; the line says what may run."""
    bound = 45.0  # core.withdraw.WITHDRAW_SECONDS (30 s) and the wait for what was in flight, with room
    q = Queue(broker, "interrupted")
    task = asyncio.create_task(q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(TOTAL)]))

    def kill_then_cancel():
        own_nats_server.kill()
        task.cancel()

    ids = interrupt_sending(broker, "interrupted", kill_then_cancel)
    started = asyncio.get_running_loop().time()
    with caplog.at_level("WARNING", logger="naq_nb"), pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), bound)
    assert asyncio.get_running_loop().time() - started < bound
    said = [r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage()]
    assert said and re.search(rf"after sending {len(ids)}: 0 cancelled; {len(ids)} could not be cancelled", said[0])


# A plain script: its Ctrl-C raises KeyboardInterrupt at once and the interpreter exits. The jobs it
# had sent are cancelled on naq_nb's loop meanwhile, which the exit must wait for before it closes
# the connection (or stops the nq.local() cluster) they go through.
SCRIPT = """
import json, signal, sys, threading
import naq_nb as nq
from naq_nb.client.loop import run_sync
from test_interrupted_map import TOTAL, interrupt_sending
import jobs

{start}
b = run_sync(client.broker())
run_sync(b.ensure_layout())
main = threading.main_thread().ident

def interrupt():
    print(json.dumps(ids), flush=True)  # the jobs whose record went out: the test checks each
    signal.pthread_kill(main, signal.SIGINT)

ids = interrupt_sending(b, "default", interrupt)
nq.map(jobs.add, range(TOTAL), [1] * TOTAL)
"""


def run_script(start: str, env: dict | None = None) -> tuple[list[str], str]:
    """Run :data:`SCRIPT` (``start`` makes ``client``) to its exit; the ids it sent, and its stderr."""
    e = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}:{ROOT / 'tests' / 'integration'}", **(env or {})}
    code = SCRIPT.format(start=textwrap.dedent(start).strip())
    proc = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr[-3000:])
    return json.loads(proc.stdout.splitlines()[0]), proc.stderr


@pytest.mark.parametrize("start", ["connect", "local"])
def test_ctrl_c_in_nq_map_of_a_script_cancels_what_it_sent_before_the_script_exits(nb_client, nats_server, start):
    # "local": the script's nq.local() cluster is stopped at exit first (it closes its client).
    url = nats_server.url
    made = {"connect": f"nq.connect({url!r})", "local": f"nq.local(0, scheduler=False, nats_url={url!r}).client"}
    ids, err = run_script(f"client = {made[start]}")
    assert N <= len(ids) < TOTAL, "interrupted part-way"
    # The line was said before the exit, and what it says is so: every job sent is cancelled.
    assert re.search(rf"of {TOTAL:,} jobs was interrupted after sending {len(ids)}: {len(ids)} cancelled\n", err), err
    b = run_sync(nb_client.broker())
    assert run_sync(all_cancelled(b, ids)) == {}
    assert run_sync(Queue(b, "default").count()) == 0, "no job of the map is left to run"


BACKLOG = 30_000  # messages queued ahead of the interrupted call's jobs


@pytest.mark.parametrize("way", ["batches", "one by one"])
async def test_an_interrupted_enqueue_behind_a_backlog_cancels_what_it_sent_within_its_bound(
    broker, way, monkeypatch, caplog
):
    """The jobs just sent are the newest in their queue. Their messages (a fast batch reports no
    sequence per job; a message in doubt has none either) were searched for from the queue's first
    message, one request each: behind a backlog the search ran out of time before it reached them,
    and the jobs stayed queued, marked cancelled, for a worker that never heard of the cancel to run.
    The search's share of the bound is cut to 1.5 s here: reading the backlog takes seconds."""
    from naq_nb.core import withdraw as withdraw_mod

    fast_or_not(broker, way, monkeypatch)
    monkeypatch.setattr(withdraw_mod, "SEARCH_SECONDS", 1.5)
    q = Queue(broker, "backlogged")
    subject = broker.layout.queue_subject("backlogged")
    for _ in range(BACKLOG):  # (no worker: nothing reads them as jobs)
        await broker.nc.publish(subject, b"queued ahead")

    async def backlog_stored():
        return (await broker.js.stream_info(broker.layout.jobs_stream)).state.messages == BACKLOG

    await eventually(backlog_stored, 60, "the backlog stored")
    task = asyncio.create_task(q.enqueue_many([(jobs.add, (i, 1), {}) for i in range(TOTAL)]))
    ids = interrupt_sending(broker, "backlogged", task.cancel)
    with caplog.at_level("WARNING", logger="naq_nb"), pytest.raises(asyncio.CancelledError):
        await task
    del broker.send
    said = [r.getMessage() for r in caplog.records if "was interrupted" in r.getMessage()]
    assert said and re.search(rf"after sending {len(ids)}: {len(ids)} cancelled$", said[0]), said
    assert await all_cancelled(broker, ids) == {}
    assert await q.count() == BACKLOG, "none of the interrupted call's jobs is left in the queue"


async def test_a_cancel_while_the_window_waits_for_its_oldest_ack_still_learns_where_that_job_is(
    broker, monkeypatch
):
    """Job by job, a full window waits for its oldest job's acknowledgement before the next send. A
    cancel landing there cancelled that acknowledgement itself, and the job, already out of the
    window, was not among those waited for: what was stored was no longer known once the cancel
    propagated (its message was left to a search of the queue). The acknowledgement is held back
    until the cancel has landed."""
    from naq_nb.core.queue import ENQUEUE_WINDOW

    monkeypatch.setattr(broker, "fast_batches", False)
    q = Queue(broker, "interrupted")
    made = [q.make_job(jobs.add, (i, 1)) for i in range(ENQUEUE_WINDOW + 1)]
    subject = broker.layout.queue_subject("interrupted")
    awaited = asyncio.Event()

    class Held(asyncio.Future):
        """The first job's acknowledgement as the enqueue sees it: it says when it is waited for."""

        def add_done_callback(self, fn, *, context=None):
            awaited.set()
            super().add_done_callback(fn, context=context)

    held: list[tuple[asyncio.Future, Held]] = []
    real = broker.publish_async

    async def publish_async(to, payload, headers=None, **kw):
        ack = await real(to, payload, headers, **kw)
        if to == subject and not held:
            held.append((ack, Held()))
            return held[0][1]
        return ack

    broker.publish_async = publish_async
    task = asyncio.create_task(q.enqueue_jobs(made))
    await asyncio.wait_for(awaited.wait(), 60)  # the window is full: the next send waits for it
    task.cancel()
    ack, seen = held[0]
    ack.add_done_callback(lambda f: seen.done() or seen.set_result(f.result()))  # now, after the cancel
    with pytest.raises(asyncio.CancelledError):
        await task
    del broker.publish_async
    sent = made[:ENQUEUE_WINDOW]
    assert [j.job_id for j in sent if j.sequence is None] == [], "every job sent has its sequence"
    assert await all_cancelled(broker, [j.job_id for j in sent]) == {}
    assert await q.count() == 0
