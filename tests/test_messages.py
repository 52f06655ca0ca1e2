"""Hand-published job messages with bad headers: never run, never loop, one line each, to the failed stream."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from naq_nb.core.envelope import HEADER_META, HEADER_MSG_ID, decode_meta
from naq_nb.core.errors import SerializationError
from naq_nb.core.failed import list_failed
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs


def good_meta(job_id: str, **over) -> dict:
    meta = {"v": 1, "id": job_id, "q": "default", "fn": "jobs.mark", "ser": "pickle", "ts": time.time(),
            "retry": {"max_retries": 0, "backoff": "fixed", "delay": 0.0, "max_delay": 3600.0, "jitter": 0.0,
                      "retry_on": []}, "timeout": None, "deps": [], "rttl": None, "name": None}
    meta.update(over)
    return meta


async def publish_raw(broker, meta: dict | str, body: bytes, queue: str = "default", msg_id: str | None = None):
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    headers = {HEADER_META: raw, HEADER_MSG_ID: msg_id or f"raw-{time.monotonic_ns()}"}
    return await broker.js.publish(broker.layout.queue_subject(queue), body, headers=headers)


async def poll(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def consumer_settled(broker, queue="default"):
    info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name(queue))
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


BAD_METAS = {
    "rttl abc": {"rttl": "abc"},
    "id empty": {"id": ""},
    "id wildcard": {"id": ">"},
    "id with dot": {"id": "zz.victim"},
    "id trailing newline": {"id": "abc\n"},
    "queue wildcard": {"q": "*"},
    "timeout NaN": {"timeout": float("nan")},
    "timeout bool": {"timeout": True},
    "timeout negative": {"timeout": -1},
    "retry count str": {"retry": {"max_retries": "3"}},
    "retry delay inf": {"retry": {"max_retries": 2, "delay": float("inf")}},
    "retry unknown key": {"retry": {"max_retries": 1, "forever": True}},
    "retry not object": {"retry": [1, 2]},
    "deps not list": {"deps": "abc"},
    "deps bad id": {"deps": ["a.b"]},
    "deps self": {"deps": ["SELF"]},
    "serializer unknown": {"ser": "marshal"},
    "ts str": {"ts": "yesterday"},
    "name int": {"name": 5},
}


@pytest.mark.parametrize("case", sorted(BAD_METAS))
def test_decode_meta_refuses_bad_values(case):
    over = dict(BAD_METAS[case])
    if over.get("deps") == ["SELF"]:
        over["deps"] = ["j1"]
    with pytest.raises(SerializationError, match="Naq-Meta"):
        decode_meta({HEADER_META: json.dumps(good_meta("j1", **over))})


def test_decode_meta_refuses_non_objects_and_accepts_a_real_job():
    for raw in ("[]", "null", "12", "{", '{"id": NaN}'):
        with pytest.raises(SerializationError):
            decode_meta({HEADER_META: raw})
    with pytest.raises(SerializationError, match="no Naq-Meta"):
        decode_meta(None)
    m = decode_meta({HEADER_META: json.dumps(good_meta("sched-1-1700000000000", timeout=2, rttl=60, due=1.0))})
    assert m.options.timeout == 2.0 and m.options.result_ttl == 60.0


async def test_bad_headers_go_to_failed_stream_once_without_running(broker, start_worker, tmp_path, caplog):
    """Each bad message is acked into the failed stream with its reason; the job never runs, nothing loops."""
    ran = tmp_path / "ran"
    body = broker.serializer.dumps_call(jobs.mark, (str(ran), "x"), {})
    w = await start_worker(concurrency=2)
    caplog.set_level(logging.WARNING, logger="naq_nb")
    cases = {"rttl": good_meta("bad-rttl", rttl="abc"), "empty": good_meta(""), "gt": good_meta(">"),
             "nan": '{"id":"nan-t","q":"default","timeout":NaN}'}
    for name, meta in cases.items():
        await publish_raw(broker, meta, body)
    good = await Queue(broker).enqueue(jobs.add, 1, 2)
    assert (await wait_for_result(broker, good.job_id, 30)).unwrap() == 3, "the worker goes on"
    failed = await poll(lambda: _failed_when(broker, len(cases)), what="failed entries")
    reasons = [f["reason"] for f in failed]
    assert any("rttl" in r for r in reasons) and all("malformed" in r for r in reasons), reasons
    await poll(lambda: consumer_settled(broker), what="every message acked")
    info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name("default"))
    assert info.delivered.stream_seq == info.ack_floor.stream_seq
    assert info.num_redelivered == 0, "no nak loop"
    assert not ran.exists(), "a bad message never runs its function"
    assert w.stats["malformed"] == len(cases)
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == len(cases) and not any(r.exc_info for r in caplog.records), "one line per bad message"


async def _failed_when(broker, n):
    items = await list_failed(broker)
    return items if len(items) >= n else None


async def test_healthy_scheduler_publishes_each_tick_once(broker, settings, caplog):
    """A 1 s schedule over ~5 s: every occurrence published once, not left to JetStream's de-dup."""
    from conftest import Services
    from naq_nb.core.scheduler import Scheduler
    from naq_nb.core.schedules import make_schedule, save_schedule
    caplog.set_level(logging.INFO, logger="naq_nb.scheduler")
    seen: list[str] = []

    async def count(msg):
        seen.append(msg.headers[HEADER_MSG_ID])
    sub = await broker.nc.subscribe(broker.layout.queue_subject("ticks"), cb=count)  # sees duplicates too
    job = Queue(broker, "ticks").make_job(jobs.add, (1, 2))
    s, body = make_schedule(job, broker, interval=1.0, now=time.time())
    await save_schedule(broker, s, body)
    services = Services()
    sch = await services.start(Scheduler(settings=settings, ha=True))
    try:
        await poll(lambda: _at_least(seen, 5), timeout=60, what="five ticks")
    finally:
        await services.stop_all(graceful=True)
        await sub.unsubscribe()
    assert len(seen) == len(set(seen)), f"duplicate publishes: {seen}"
    assert sch.fired >= 5
    assert not [r for r in caplog.records if "changed while firing" in r.getMessage()], "no revision conflicts"
    assert not [r for r in caplog.records if "already fired" in r.getMessage()]


async def _at_least(seen: list, n: int) -> bool:
    return len(seen) >= n
