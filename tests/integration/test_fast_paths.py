"""The per-call fast paths keep their guarantees (issue 10): reading a finished job's result,
the calls' loop hop, enqueue's acknowledgements."""

import asyncio

import pytest

from naq_nb.core.errors import JobNotFinishedError, JobNotFoundError
from naq_nb.core.queue import Queue
from naq_nb.core.records import encode_failure
from naq_nb.core.results import wait_for_result
from naq_nb.core.serialization import get_serializer

import jobs


def _count_subscriptions(broker) -> list:
    made: list = []
    real = broker.nc.subscribe

    async def counting(subject, *a, **kw):
        made.append(subject)
        return await real(subject, *a, **kw)
    broker.nc.subscribe = counting
    return made


async def test_finished_result_is_one_get_without_subscription(broker, start_worker):
    await start_worker()
    job = await Queue(broker).enqueue(jobs.add, 2, 3)
    assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == 5
    made = _count_subscriptions(broker)
    for _ in range(3):
        assert (await wait_for_result(broker, job.job_id, 30)).unwrap() == 5
    assert made == [], "a finished job's result must be read without subscribing"


async def test_check_once_needs_no_subscription(broker):
    job = await Queue(broker).enqueue(jobs.add, 1, 1)  # no worker: stays queued
    made = _count_subscriptions(broker)
    with pytest.raises(JobNotFinishedError):
        await wait_for_result(broker, job.job_id, 0)
    with pytest.raises(JobNotFoundError, match="no job with id 'nope'"):
        await wait_for_result(broker, "nope", 0)
    assert made == []
    with pytest.raises(JobNotFoundError, match="no job with id 'nope'"):
        await wait_for_result(broker, "nope", 5)  # a wait checks existence beside its second read


async def test_waiting_call_returns_the_value_stored_after_it_started(broker):
    """The slow path still wakes on the put and returns the stored record (read back)."""
    job = await Queue(broker).enqueue(jobs.add, 1, 1)  # no worker: the test stores the result
    waiter = asyncio.ensure_future(wait_for_result(broker, job.job_id, 30))
    kv = await broker.kv(broker.layout.results_bucket)
    for _ in range(300):  # until the waiter has subscribed (past its fast path)
        if waiter.done() or any(s.subject.endswith(job.job_id) for s in broker.nc._subs.values()):
            break
        await asyncio.sleep(0.01)
    assert not waiter.done()
    await kv.put(job.job_id, encode_failure(get_serializer("pickle"), ValueError("stored")))
    rec = await asyncio.wait_for(waiter, 30)
    with pytest.raises(ValueError, match="stored"):
        rec.unwrap()


# --- run_async: the hop from the caller's loop to naq_nb's loop ---------------------------------

def test_run_async_returns_raises_and_runs_on_the_background_loop():
    import threading

    from naq_nb.client.loop import get_loop_thread, run_async

    async def where() -> threading.Thread:
        return threading.current_thread()

    async def fails() -> None:
        raise KeyError("inner")

    async def main():
        assert await run_async(where()) is get_loop_thread().thread
        with pytest.raises(KeyError, match="inner"):
            await run_async(fails())
    asyncio.run(main())


def test_cancelling_the_caller_cancels_the_call_on_the_background_loop():
    import threading

    from naq_nb.client.loop import run_async
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main():
        call = asyncio.ensure_future(run_async(forever()))
        while not started.is_set():  # bounded by the wait_for below
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    asyncio.run(asyncio.wait_for(main(), 30))
    assert cancelled.wait(30), "the background task kept running after its caller was cancelled"


class _Collector:
    """A subscription callback that keeps the messages and says when ``n`` have come."""

    def __init__(self, n: int) -> None:
        self.n, self.msgs, self.done = n, [], asyncio.Event()

    async def __call__(self, msg) -> None:
        self.msgs.append(msg)
        if len(self.msgs) >= self.n:
            self.done.set()


async def test_broker_send_puts_the_same_message_on_the_wire_as_nats_py(broker):
    # Broker.send writes the protocol command itself: what a subscriber gets must be what
    # nc.publish would have sent, with and without headers and reply.
    cases = [
        ("naqtest.send.a", b"", "", None),
        ("naqtest.send.b", b"payload \r\n with a line break", "reply.to.me", None),
        ("naqtest.send.c", b"x" * 5000, "r", {"Nats-Msg-Id": "abc", "Naq-Meta": '{"v":1,"fn":"m.f"}'}),
        ("naqtest.send.d", b"{}", "", {"Nats-Expected-Last-Subject-Sequence": "0"}),
        ("naqtest.send.e", "é".encode(), "", {"Naq-Meta": '  {"fn":"m.é"} '}),  # nats-py strips a value
    ]
    got = _Collector(2 * len(cases))
    sub = await broker.nc.subscribe("naqtest.send.*", cb=got.__call__)
    for subject, payload, reply, headers in cases:
        await broker.nc.publish(subject, payload, reply=reply, headers=headers)
        await broker.send(subject, payload, reply, headers)
    await asyncio.wait_for(got.done.wait(), 10)
    await sub.unsubscribe()
    seen = [(m.subject, m.data, m.reply, m.headers) for m in got.msgs]
    sent = [(s, p, r, h and {k: v.strip() for k, v in h.items()}) for s, p, r, h in cases]
    assert seen == [c for c in sent for _ in range(2)]


async def test_broker_send_leaves_a_header_with_a_line_break_to_nats_py(broker):
    got = _Collector(2)
    sub = await broker.nc.subscribe("naqtest.send2", cb=got.__call__)
    await broker.send("naqtest.send2", b"1", "", {"Naq-Meta": "a\r\nInjected: yes"})
    await broker.send("naqtest.send2", b"2")  # the connection still works after it
    await asyncio.wait_for(got.done.wait(), 10)
    await sub.unsubscribe()
    assert [m.data for m in got.msgs] == [b"1", b"2"]
    assert "Injected" not in (got.msgs[0].headers or {})  # nats-py folded the line break: no header injected


async def test_broker_send_refuses_a_subject_that_would_split_the_protocol_line(broker):
    import nats.errors
    for subject, reply in (("naqtest.a b", ""), ("naqtest.a\r\nPUB x 0", ""), ("naqtest.ok", "r e"), ("", "")):
        with pytest.raises(nats.errors.BadSubjectError):
            await broker.send(subject, b"x", reply)
    await broker.nc.flush(timeout=5)  # the connection is still in order


async def test_broker_send_leaves_an_odd_header_key_to_nats_py(broker):
    import nats.errors
    for bad in ("Bad Key", "K:X"):
        with pytest.raises(nats.errors.BadHeaderError):
            await broker.send("naqtest.send3", b"x", "", {bad: "v"})
    got = _Collector(1)
    sub = await broker.nc.subscribe("naqtest.send3", cb=got.__call__)
    await broker.send("naqtest.send3", b"y", "", {" K ": "v"})  # nats-py strips the key
    await asyncio.wait_for(got.done.wait(), 10)
    await sub.unsubscribe()
    assert got.msgs[0].headers == {"K": "v"}
