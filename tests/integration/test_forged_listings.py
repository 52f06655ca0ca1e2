"""Forged or damaged records in the workers and status buckets never break a listing.

Records are written by hand next to valid ones; every listing (``list_workers``, ``nq.workers()``,
``nq.jobs()``, ``naq list-workers``, ``naq jobs``) still builds and holds the valid rows. The
simpler non-heartbeats (not JSON, not an object, a bad ``heartbeat_at`` type) are in
test_bad_input.py's ``test_forged_worker_records_are_left_out_of_the_listing``; here, each field.
"""

import json
import logging
import time

import pytest

from naq_nb.core.queue import Queue
from naq_nb.core.registry import decode_heartbeat, encode_heartbeat, list_workers
from naq_nb.notebook import frames

import jobs
from test_cli import naq


def heartbeat(**fields) -> bytes:
    """A full heartbeat as a worker writes it (beating now), with ``fields`` replaced."""
    now = time.time()
    rec = {"id": "w-good", "name": "w", "host": "h", "pid": 1, "queues": ["default"], "concurrency": 2,
           "state": "idle", "execution": "threads", "running": [], "parked": 0, "started_at": now,
           "heartbeat_at": now, "stats": {"processed": 3, "failed": 1}, **fields}
    return encode_heartbeat(rec)  # type: ignore[arg-type]


def raw_heartbeat(field: str, json_text: str) -> bytes:
    """A full heartbeat whose ``field`` is ``json_text`` as written (NaN, 1e999: no Python float)."""
    rec = json.loads(heartbeat())
    rec[field] = "@@"
    return json.dumps(rec).replace('"@@"', json_text).encode()


# Each a heartbeat with one field a reader uses of the wrong type or out of range.
BAD_FIELDS = {
    "hb-inf": raw_heartbeat("heartbeat_at", "Infinity"),
    "hb-neg-inf": raw_heartbeat("heartbeat_at", "-Infinity"),
    "hb-1e999": raw_heartbeat("heartbeat_at", "1e999"),
    "hb-1e20": heartbeat(heartbeat_at=1e20),
    "hb-huge-int": heartbeat(heartbeat_at=10**400),
    "hb-negative": heartbeat(heartbeat_at=-1e300),
    "started-1e20": heartbeat(started_at=1e20),
    "started-nan": raw_heartbeat("started_at", "NaN"),
    "started-true": heartbeat(started_at=True),
    "stats-list": heartbeat(stats=[1, 2]),
    "stats-str": heartbeat(stats="x"),
    "stats-str-count": heartbeat(stats={"processed": "many"}),
    "running-int": heartbeat(running=5),
    "running-null": heartbeat(running=None),
    "running-ints": heartbeat(running=[1, 2]),
    "queues-ints": heartbeat(queues=[1, 2]),
    "queues-null": heartbeat(queues=None),
    "queues-str": heartbeat(queues="default"),
    "queues-dict": heartbeat(queues={"default": 1}),
    "queues-bad-name": heartbeat(queues=["bad.name", "default"]),
    "concurrency-str": heartbeat(concurrency="2"),
    "concurrency-true": heartbeat(concurrency=True),
    "pid-negative": heartbeat(pid=-1),
    "state-int": heartbeat(state=5),
    "id-list": heartbeat(id=["w"]),
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("key", sorted(BAD_FIELDS))
def test_decode_heartbeat_refuses_a_field_of_the_wrong_type_or_range(key):
    assert decode_heartbeat(BAD_FIELDS[key]) is None


def test_decode_heartbeat_keeps_a_valid_record_and_fills_what_readers_iterate():
    full = decode_heartbeat(heartbeat())
    assert full is not None and full["queues"] == ["default"] and 0 <= full["heartbeat_age"] < 60
    small = decode_heartbeat(json.dumps({"id": "w-small", "heartbeat_at": time.time()}).encode())
    assert small is not None
    assert (small["queues"], small["running"], small["stats"]) == ([], [], {})


async def forge_workers(broker) -> None:
    """The valid heartbeat ``w-good`` and every record of ``BAD_FIELDS`` under its own key."""
    kv = await broker.kv(broker.layout.workers_bucket)
    await kv.put("w-good", heartbeat())
    for key, value in BAD_FIELDS.items():
        await kv.put(key, value)


async def test_list_workers_skips_each_forged_record_with_a_warning_naming_its_key(broker, caplog):
    await forge_workers(broker)
    with caplog.at_level(logging.WARNING, logger="naq_nb"):
        rows = await list_workers(broker)
    assert [r["id"] for r in rows] == ["w-good"]
    warned = caplog.text
    missing = [key for key in BAD_FIELDS if repr(key) not in warned]
    assert not missing, f"no warning names {missing}"


async def test_workers_frame_builds_with_the_valid_worker(broker, nb_client):
    await forge_workers(broker)
    df = await frames.workers_async(client=nb_client)
    assert list(df.columns) == frames.WORKER_COLUMNS
    assert list(df.worker_id) == ["w-good"]
    row = df.iloc[0]
    assert (row.running, row.processed, row.failed, row.retried) == (0, 3, 1, 0)
    assert row.heartbeat_at.year >= 2024


async def test_cli_list_workers_and_jobs_show_the_valid_worker(broker, nats_server):
    await forge_workers(broker)
    await Queue(broker).enqueue(jobs.add, 1, 1)  # a job waiting on "default", served by w-good
    out = naq("list-workers", "--nats-url", nats_server.url)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["w-good"], out.stdout
    out = naq("jobs", "--nats-url", nats_server.url)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert rows == [["default", "1", "0", "1"]], out.stdout  # queue, queued, at workers, workers
    assert "Traceback" not in out.stderr


# Status records with a time no timestamp can hold, next to jobs enqueued the ordinary way.
BAD_TIMES = {
    "f-enq-1e20": b'{"id":"f-enq-1e20","queue":"default","status":"queued","enqueued_at":1e20}',
    "f-fin-inf": b'{"id":"f-fin-inf","queue":"default","status":"failed","started_at":5,"finished_at":Infinity}',
    "f-start-neg": b'{"id":"f-start-neg","queue":"default","status":"running","started_at":-1e300}',
    "f-start-true": b'{"id":"f-start-true","queue":"default","status":"failed","started_at":true,"finished_at":5}',
    "f-fin-huge": b'{"id":"f-fin-huge","queue":"default","status":"failed","started_at":5,"finished_at":1'
                  + b"0" * 400 + b"}",
    # an integer too big for a float where the listing sorts (it overflowed the sort key)
    "f-enq-huge": b'{"id":"f-enq-huge","queue":"default","status":"queued","enqueued_at":1' + b"0" * 400 + b"}",
}


async def test_jobs_frame_shows_out_of_range_and_boolean_times_as_missing(broker, nb_client):
    good = [await Queue(broker).enqueue(jobs.add, i, i) for i in range(2)]
    kv = await broker.kv(broker.layout.status_bucket)
    for key, value in BAD_TIMES.items():
        await kv.put(key, value)
    df = await frames.jobs_async(client=nb_client)
    assert set(df.job_id) == {j.job_id for j in good} | set(BAD_TIMES)
    forged = df[df.job_id.isin(list(BAD_TIMES))].set_index("job_id")
    assert forged.enqueued_at.isna().all()
    assert forged.duration.isna().all(), "a boolean, infinite or far-off time yields no duration"
    missing = forged[["started_at", "finished_at"]].isna().to_dict("index")
    assert missing == {
        "f-enq-1e20": {"started_at": True, "finished_at": True},
        "f-fin-inf": {"started_at": False, "finished_at": True},
        "f-start-neg": {"started_at": True, "finished_at": True},
        "f-start-true": {"started_at": True, "finished_at": False},
        "f-fin-huge": {"started_at": False, "finished_at": True},
        "f-enq-huge": {"started_at": True, "finished_at": True},
    }
    valid = df[df.job_id.isin([j.job_id for j in good])]
    assert valid.enqueued_at.notna().all() and (valid.enqueued_at.dt.year >= 2024).all()
