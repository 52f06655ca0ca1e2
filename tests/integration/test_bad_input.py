"""Bad input: a clear error at the call that caused it, and nothing already queued is lost."""

import asyncio
import re
import socket
import threading
import time
import types

import pytest

from naq_nb.core.broker import Broker, create_store
from naq_nb.core.errors import (LayoutConflictError, NaqConnectionError, PayloadTooLargeError,
                                SerializationError, UnknownQueueError,
                                JobNotFinishedError)
from naq_nb.core.failed import list_failed
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result
from naq_nb.core.settings import Settings
from nats.js import api

import jobs
from helpers import eventually


async def test_unpicklable_function_names_the_culprit(broker):
    q = Queue(broker)
    before = await q.enqueue(jobs.add, 1, 1)
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1
    with pytest.raises(SerializationError, match=r"captured variable 'lock'.*lock"):
        await q.enqueue(uses_lock)
    sock = socket.socket()
    try:
        with pytest.raises(SerializationError, match=r"argument 0 \(socket"):
            await q.enqueue(jobs.add, sock, 1)
    finally:
        sock.close()
    assert await q.count() == 1, "the job queued before the bad call is still there"
    assert before.sequence


async def test_json_mode_rejects_lambdas_and_main_functions(settings):
    b = await Broker.connect(settings=settings.with_(serializer="json"))
    try:
        q = Queue(b)
        with pytest.raises(SerializationError, match="lambda"):
            await q.enqueue(lambda: 1)

        def nested():
            return 1
        with pytest.raises(SerializationError, match="nested functions"):
            await q.enqueue(nested)
        with pytest.raises(SerializationError, match="not JSON"):
            await q.enqueue(jobs.add, object(), 1)
        orphan = types.FunctionType(jobs.add.__code__, {}, "add")
        orphan.__module__ = "no_such_module"
        with pytest.raises(SerializationError, match="not importable.*cannot import 'no_such_module:add'"):
            await q.enqueue(orphan)
        ok = await q.enqueue(jobs.add, 2, 3)
        assert await q.count() == 1 and ok.job_id
    finally:
        await b.close()


async def test_json_worker_never_unpickles_and_honours_allow_list(settings, broker, start_worker):
    json_settings = settings.with_(serializer="json", json_allowed=("jobs:add",))
    await start_worker(settings=json_settings)
    pickled = await Queue(broker).enqueue(jobs.add, 1, 1)          # pickle producer
    rec = await wait_for_result(broker, pickled.job_id, 10)
    assert rec.status == "failed" and "only accepts 'json'" in rec.meta["error"]
    jb = await Broker.connect(settings=json_settings)
    try:
        ok = await Queue(jb).enqueue(jobs.add, 2, 3)
        assert (await wait_for_result(jb, ok.job_id, 10)).unwrap() == 5
        with pytest.raises(SerializationError, match="not allowed"):  # the producer's own list refuses it
            await Queue(jb).enqueue(jobs.count_words, "a b")
        open_producer = await Broker.connect(settings=settings.with_(serializer="json"))
        try:
            denied = await Queue(open_producer).enqueue(jobs.count_words, "a b")
        finally:
            await open_producer.close()
        rec = await wait_for_result(jb, denied.job_id, 10)
        assert rec.status == "failed" and "not allowed by NAQ_JSON_ALLOWED" in rec.meta["error"]
    finally:
        await jb.close()


async def test_json_mode_refuses_dict_keys_that_would_come_back_as_strings(settings, start_worker):
    """JSON turns ``{1: "a"}`` into ``{"1": "a"}``: a wrong answer nobody is told of. So an argument
    with such a key is refused at the call (the queue keeps what it had), and a result with one
    fails its job with that reason."""
    json_settings = settings.with_(serializer="json", json_allowed=("jobs",))
    await start_worker(settings=json_settings)
    jb = await Broker.connect(settings=json_settings)
    try:
        q = Queue(jb)
        kept = await q.enqueue(jobs.echo_value, {"a": [1, {"b": 2}]})
        for bad, key in [({1: "a"}, "1 (int)"), ([{"x": {1.5: 3}}], "1.5 (float)"), ({True: 1}, "True (bool)"),
                         ({None: 1}, "None")]:
            with pytest.raises(SerializationError, match=f"dict key {re.escape(key)}.*come back as a string"):
                await q.enqueue(jobs.echo_value, bad)
        with pytest.raises(SerializationError, match="keyword argument|dict key 2"):
            await q.enqueue(jobs.echo_value, value={2: 0})
        assert (await wait_for_result(jb, kept.job_id, 10)).unwrap() == {"a": [1, {"b": 2}]}
        ran = await q.enqueue(jobs.int_keys, 3)
        rec = await wait_for_result(jb, ran.job_id, 10)
        assert rec.status == "failed" and "dict key 0 (int) would come back as a string" in rec.meta["error"]
    finally:
        await jb.close()


async def test_signed_payloads_required_when_worker_has_key(settings, broker, start_worker):
    # Refused with why in the failed stream; nothing is written under the ids they name (unverified:
    # the id may be another job's), so each stays "not finished" where it was.
    await start_worker(settings=settings.with_(signing_key=b"s3cret"))
    unsigned = await Queue(broker).enqueue(jobs.add, 1, 1)
    sb = await Broker.connect(settings=settings.with_(signing_key=b"s3cret"))
    wrong = await Broker.connect(settings=settings.with_(signing_key=b"other"))
    try:
        good = await Queue(sb).enqueue(jobs.add, 2, 2)
        assert (await wait_for_result(sb, good.job_id, 10)).unwrap() == 4
        forged = await Queue(wrong).enqueue(jobs.add, 3, 3)

        async def reasons():
            rows = {r["job_id"]: r["reason"] for r in await list_failed(broker)}
            return rows if len(rows) >= 2 else None
        rows = await eventually(reasons, 30, "both refused messages in the failed stream")
        assert "not signed" in rows[unsigned.job_id] and "does not verify" in rows[forged.job_id]
        for jid in (unsigned.job_id, forged.job_id):
            with pytest.raises(JobNotFinishedError):
                await wait_for_result(sb, jid, 0)
    finally:
        await sb.close()
        await wrong.close()


async def test_server_down_fails_within_bound():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(NaqConnectionError, match=f"127.0.0.1:{port}"):
        await Broker.connect(settings=Settings.from_env(environ={}, nats_url=f"nats://127.0.0.1:{port}",
                                                         connect_timeout=1.0))
    assert time.monotonic() - t < 10


async def test_garbage_on_queue_subject_goes_to_failed_and_worker_goes_on(broker, start_worker):
    await start_worker()
    await broker.js.publish(broker.layout.queue_subject("default"), b"\x00\xffnot a job")
    await broker.js.publish(broker.layout.queue_subject("default"), b"x", headers={"Naq-Meta": "{broken"})
    j = await Queue(broker).enqueue(jobs.add, 4, 4)
    assert (await wait_for_result(broker, j.job_id, 10)).unwrap() == 8
    for _ in range(100):
        failed = await list_failed(broker)
        if len(failed) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(failed) == 2
    assert all("malformed message" in f["reason"] for f in failed)

    async def all_taken() -> bool:  # (a worker acks a job after its records: the count lags a read)
        return await Queue(broker).count() == 0

    await eventually(all_taken, 10, "every message taken off the queue")


async def test_payload_too_large_headers(settings):
    # Bodies and results over max_payload go through the object store (test_blobs.py); headers cannot.
    # 1,000 dependencies (the most a job may name) of 128-character ids: 130 KB of headers, over 64 KiB.
    from naq_nb.core.server import EmbeddedServer
    with EmbeddedServer(max_payload=65536) as srv:
        b = await Broker.connect(settings=settings.with_(nats_url=srv.url))
        try:
            await b.ensure_layout()
            q = Queue(b).configure(depends_on=[f"{i:04d}" + "d" * 124 for i in range(1000)])
            too_big = r"job jobs.add: its headers \(1[0-9,]+ bytes\) .* max_payload of 65,536"
            with pytest.raises(PayloadTooLargeError, match=too_big):
                await q.enqueue(jobs.add, 1, 2)
        finally:
            await b.close()


async def test_bad_queue_name(broker):
    with pytest.raises(UnknownQueueError, match="invalid queue name 'a b'"):
        Queue(broker, "a b")
    with pytest.raises(TypeError, match="must be callable"):
        await Queue(broker).enqueue(42)


async def test_incompatible_existing_stream_is_an_error(settings):
    b = await Broker.connect(settings=settings)
    jobs_stream = b.layout.jobs_stream
    try:
        cfg = api.StreamConfig(name=jobs_stream, subjects=[f"{settings.prefix}.jobs.*"],
                               retention=api.RetentionPolicy.LIMITS)
        await create_store(jobs_stream, lambda: b.js.add_stream(cfg))  # (the server's race: see create_store)
        with pytest.raises(LayoutConflictError, match=f"{jobs_stream}.*retention"):
            await b.ensure_layout()
    finally:
        await b.close()


async def test_a_stream_in_a_buckets_place_that_is_no_bucket_is_an_error(settings):
    b = await Broker.connect(settings=settings)
    bucket = b.layout.status_bucket
    stream = b.layout.kv_stream(bucket)
    try:  # a bucket's stream keeps one value per key: this one keeps every message
        cfg = api.StreamConfig(name=stream, subjects=[b.layout.kv_subject(bucket, ">")])
        await create_store(stream, lambda: b.js.add_stream(cfg))
        with pytest.raises(LayoutConflictError, match=f"stream {stream} exists but is no KV bucket"):
            await b.ensure_layout()
    finally:
        await b.close()


async def test_forged_worker_records_are_left_out_of_the_listing(broker):
    # A record in the workers bucket that is not a heartbeat (forged, damaged) used to make
    # list_workers (and `naq list-workers`) raise; it names no live worker.
    from naq_nb.core.registry import decode_heartbeat, encode_heartbeat, list_workers

    await broker.ensure_layout()
    kv = await broker.kv(broker.layout.workers_bucket)
    good = {"id": "w-good", "name": "w", "queues": ["default"], "heartbeat_at": time.time()}
    await kv.put("w-good", encode_heartbeat(good))  # type: ignore[arg-type]
    for key, junk in [("w-garbage", b"\x00\xffnot json"), ("w-list", b"[1, 2]"), ("w-str", b'"x"'),
                      ("w-beat", b'{"id": "w-beat", "heartbeat_at": "yesterday"}'),
                      ("w-bool", b'{"id": "w-bool", "heartbeat_at": true}'), ("w-nan", b'{"heartbeat_at": NaN}')]:
        await kv.put(key, junk)
        assert decode_heartbeat(junk) is None, key
    rows = await list_workers(broker)
    assert [r["id"] for r in rows] == ["w-good"]
    assert 0 <= rows[0]["heartbeat_age"] < 60
