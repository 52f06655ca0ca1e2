"""Many keys read in few requests (issue 10: a cached sweep re-run, ``Sweep.attach`` and
``attach_many`` read every job's status and result): the same answer as one get per key,
whatever the server version, with missing, deleted and purged keys left out."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.js import api

import naq_nb as nq
from naq_nb.client.future import attach_many
from naq_nb.client.loop import run_sync
from naq_nb.client.twins import blocking
from naq_nb.core.broker import Broker, create_store
from naq_nb.core.errors import NaqConnectionError
from naq_nb.core.kvscan import _batched_gets, read_keys
from naq_nb.core.layout import Layout

import jobs

attach_many_sync = blocking(attach_many)


async def _fill(broker: Broker, bucket: str, n: int) -> dict[str, bytes]:
    kv = await broker.kv(bucket)
    want = {}
    for i in range(n):
        want[f"k{i}"] = f"value {i}".encode()
        await kv.put(f"k{i}", want[f"k{i}"])
    await kv.put("k3", b"newer")  # the current value, not the first
    want["k3"] = b"newer"
    await kv.delete("k5")
    await kv.purge("k6")
    del want["k5"], want["k6"]
    return want


async def test_many_keys_read_in_few_requests_give_what_one_get_each_gives(broker):
    bucket = broker.layout.meta_bucket
    want = await _fill(broker, bucket, 1500)  # over the 1,024 keys one request may name
    keys = [f"k{i}" for i in range(1500)] + ["missing", "k3"]  # a missing key, a repeated one

    sent = broker.nc.stats["out_msgs"]
    got = await read_keys(broker, bucket, keys)
    requests = broker.nc.stats["out_msgs"] - sent
    assert got == want

    broker.direct_buckets.discard(bucket)  # the path of servers before 2.11
    sent = broker.nc.stats["out_msgs"]
    assert await read_keys(broker, bucket, keys) == want
    assert broker.nc.stats["out_msgs"] - sent >= 1500  # one get per key
    if _batched_gets(broker):
        assert requests <= 4, f"{requests} requests for 1,501 keys: the batched gets were not used"


async def test_a_batch_the_server_refuses_is_read_key_by_key(broker, monkeypatch):
    from naq_nb.core import kvscan

    bucket = broker.layout.meta_bucket
    want = await _fill(broker, bucket, 1100)
    monkeypatch.setattr(kvscan, "DIRECT_GET_MAX_SUBJECTS", 5000)  # the server answers 413 above 1,024
    sent = broker.nc.stats["out_msgs"]
    assert await read_keys(broker, bucket, [f"k{i}" for i in range(1100)]) == want
    assert broker.nc.stats["out_msgs"] - sent >= 1100  # asked once, refused, then key by key


async def test_values_over_the_byte_cap_of_one_request_are_asked_for_again(broker):
    bucket = broker.layout.meta_bucket
    kv = await broker.kv(bucket)
    big = {f"b{i}": bytes([i]) * 600_000 for i in range(12)}  # 7.2 MB, over one request's 4 MB
    for k, v in big.items():
        await kv.put(k, v)
    got = await read_keys(broker, bucket, [*big, "none"])
    assert got.keys() == big.keys()
    assert all(got[k] == v for k, v in big.items())


async def test_no_key_exists(broker):
    assert await read_keys(broker, broker.layout.status_bucket, ["a", "b"]) == {}
    assert await read_keys(broker, broker.layout.status_bucket, []) == {}


async def test_a_bucket_made_without_direct_gets_answers_them_after_connect(settings):
    lay = Layout(prefix=settings.prefix)
    bucket = lay.status_bucket
    first = await Broker.connect(settings=settings)
    try:  # as an earlier naq_nb made it: no direct gets
        cfg = api.KeyValueConfig(bucket=bucket, history=1, direct=False)
        await create_store(bucket, lambda: first.js.create_key_value(cfg))  # (the server's race: see create_store)
        await (await first.js.key_value(bucket)).put("j1", b'{"status":"queued"}')
    finally:
        await first.close()
    b = await Broker.connect(settings=settings)
    try:
        await b.ensure_layout()
        assert (await b.js.stream_info(lay.kv_stream(bucket))).config.allow_direct
        assert bucket in b.direct_buckets
        assert await read_keys(b, bucket, ["j1", "j2"]) == {"j1": b'{"status":"queued"}'}
    finally:
        await b.close()


def test_direct_gets_only_with_one_replica():
    # A follower may answer a direct get before it has a write the leader acknowledged.
    assert all(kw["direct"] for kw in Layout(replicas=1).buckets().values())
    assert not any(kw["direct"] for kw in Layout(replicas=3).buckets().values())


@pytest.mark.parametrize("batched", [True, False])
def test_attached_futures_get_their_state_from_the_bulk_reads(nb_client, thread_worker, batched):
    done = nq.map(jobs.add, range(30), [1] * 30)
    parked = nq.options(queue="later").submit(jobs.add, 5, 6)  # no worker serves it
    thread_worker()
    assert done.results(timeout=30) == [i + 1 for i in range(30)]
    if not batched:  # the path of servers before 2.11
        run_sync(nb_client.broker()).direct_buckets.clear()
    futs = attach_many_sync(nb_client, [f.job_id for f in done] + [parked.job_id])
    assert all(f.done() for f in futs[:-1]), "a finished job's attached future resolves at once"
    assert [f.result(0) for f in futs[:-1]] == [i + 1 for i in range(30)]
    assert [f.status for f in futs[:-1]] == ["succeeded"] * 30
    assert not futs[-1].done() and futs[-1].status == "queued"


async def test_callers_waiting_on_a_failed_layout_all_get_its_error_and_the_next_call_tries_again(broker):
    # Connecting now reads and may update every bucket's config: more time in which a server can go.
    tries = []

    async def failing() -> None:
        tries.append(1)
        await asyncio.sleep(0.01)
        raise nats.errors.TimeoutError

    broker._ready, broker._ensure = None, failing
    outcomes = await asyncio.gather(*(broker.ensure_layout() for _ in range(3)), return_exceptions=True)
    # each one named as what it is, the server's own error kept as the cause
    assert [type(e) for e in outcomes] == [NaqConnectionError] * 3, outcomes
    assert all(isinstance(e.__cause__, nats.errors.TimeoutError) for e in outcomes)
    assert "did not answer a JetStream request" in str(outcomes[0])
    with pytest.raises(NaqConnectionError):
        await broker.ensure_layout()
    assert len(tries) == 2
