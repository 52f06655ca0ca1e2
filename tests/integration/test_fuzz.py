"""Fuzzing hand-published job messages: the worker never dies, never spins, and files every bad one.

Each example publishes one message (a Naq-Meta header built from broken and valid pieces, a body
that is garbage, empty or a real call) to a queue served by one worker, then waits until the
worker has acked it. Then: it was delivered once, the worker is still serving, and the message
either ran (a result exists) or ended in the failed stream with a reason.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import cloudpickle
import pytest
from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st

from naq_nb.core.envelope import HEADER_META, HEADER_MSG_ID
from naq_nb.core.failed import list_failed
from naq_nb.core.results import get_result

import jobs

QUEUE = "fuzz"

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                        st.sampled_from(["", ">", "*", "a.b", "x\n", "ok-id", QUEUE, "pickle", "json", "abc"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4)), max_leaves=8)
FIELDS = ["v", "id", "q", "fn", "ser", "ts", "retry", "timeout", "deps", "rttl", "name", "due", "sched"]


def valid_meta() -> dict:
    return {"v": 1, "id": uuid.uuid4().hex, "q": QUEUE, "fn": "jobs.add", "ser": "pickle", "ts": time.time(),
            "retry": {"max_retries": 0, "backoff": "fixed", "delay": 0.0, "max_delay": 3600.0, "jitter": 0.0,
                      "retry_on": []}, "timeout": None, "deps": [], "rttl": None, "name": None}


@st.composite
def meta_headers(draw) -> str:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "retry", "any-json", "text"]))
    if kind == "text":
        return draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
    if kind == "any-json":
        return json.dumps(draw(json_value))
    meta = valid_meta()
    if kind == "retry":  # alone: a valid policy with retries must not meet a job that fails
        meta["retry"] = draw(st.dictionaries(st.sampled_from(list(meta["retry"]) + ["extra"]), json_value,
                                             max_size=4))
        return json.dumps(meta)
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            meta[key] = draw(json_value)
        else:
            meta.pop(key, None)
    return json.dumps(meta)


bodies = st.one_of(st.binary(max_size=64), st.just(b""),
                   st.just(cloudpickle.dumps((jobs.add, (1, 2), {}))),
                   st.just(cloudpickle.dumps("not a call")))


@pytest.fixture
def fuzz_env(settings, thread_worker):
    """One server and one worker for every example; each example connects on its own loop."""
    from naq_nb.core.broker import Broker

    async def prepare():
        b = await Broker.connect(settings=settings)
        await b.ensure_consumer(QUEUE)
        await b.close()
    asyncio.run(prepare())
    return settings, thread_worker(QUEUE, concurrency=2)


async def _publish(broker, meta: str, body: bytes) -> int:
    headers = {HEADER_META: meta, HEADER_MSG_ID: uuid.uuid4().hex}
    ack = await broker.js.publish(broker.layout.queue_subject(QUEUE), body, headers=headers)
    return ack.seq


async def _settled(broker, seq: int, timeout: float = 30.0):
    """Wait until the worker acked everything up to ``seq``; returns the consumer info."""
    deadline = time.monotonic() + timeout
    while True:
        info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name(QUEUE))
        if info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"message {seq} not acked within {timeout}s: {info}")
        await asyncio.sleep(0.02)


async def _failed_count(broker) -> int:
    return len(await list_failed(broker, QUEUE, limit=10_000))


async def _status(broker, jid: str) -> str | None:
    from naq_nb.core.queue import get_status
    try:
        return (await get_status(broker, jid)).get("status")
    except Exception:  # no record (or an id the check refuses): not parked
        return None


def _job_id(meta: str) -> str | None:
    try:
        m = json.loads(meta)
    except ValueError:
        return None
    jid = m.get("id") if isinstance(m, dict) else None
    return jid if isinstance(jid, str) and jid and all(c.isalnum() or c in "_-" for c in jid) else None


async def _example(settings, worker, meta: str, body: bytes) -> None:
    from naq_nb.core.broker import Broker
    broker = await Broker.connect(settings=settings)
    try:
        before = await _failed_count(broker)
        seq = await _publish(broker, meta, body)
        info = await _settled(broker, seq)
        assert info.num_redelivered == 0, "a message was redelivered (nak loop)"
        assert worker.state in ("idle", "busy"), f"the worker is {worker.state}"
        after = await _failed_count(broker)
        jid = _job_id(meta)
        ran = jid is not None and await get_result(broker, jid) is not None
        if after == before:
            parked = jid is not None and await _status(broker, jid) == "waiting"
            assert ran or parked, f"message {seq} was neither run, parked nor filed as failed: {meta!r}"
        else:
            assert after == before + 1
            entry = (await list_failed(broker, QUEUE, limit=10_000))[-1]
            assert entry["reason"], "a failed entry says why"
    finally:
        await broker.close()


@pytest.mark.slow
@hsettings(max_examples=50, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=meta_headers(), body=bodies)
def test_fuzzed_messages_never_stall_or_kill_the_worker(fuzz_env, meta, body):
    settings, worker = fuzz_env
    asyncio.run(_example(settings, worker, meta, body))
