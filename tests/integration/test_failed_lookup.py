"""Finding a failed entry by job id: the entry the job's status record names (failed_seq) is read
directly, but only believed when it is that job's own failure; anything else falls back to the scan,
whose answer (the job's oldest own failure, else the oldest refused message naming its id) is kept."""

from __future__ import annotations

import json
import types
from collections import Counter

import pytest

from naq_nb.core import failed
from naq_nb.core.deadletter import DeadLetters
from naq_nb.core.envelope import HEADER_META
from naq_nb.core.errors import JobNotFoundError
from naq_nb.core.failed import FailedFinder, requeue_failed
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import wait_for_result
from naq_nb.core.status import encode_status

import jobs


async def _fail(broker, job_fn=jobs.boom, *args):
    job = await Queue(broker).configure(max_retries=0).enqueue(job_fn, *args)
    assert (await wait_for_result(broker, job.job_id, 15)).status == "failed"
    return job.job_id


async def _seq_of(broker, job_id, own=True):
    """The sequences of the job's own entries (or, ``own=False``, of refused ones naming it), by a listing."""
    entries = await failed.list_failed(broker, limit=10**6)
    return [e["seq"] for e in entries if e["job_id"] == job_id and e["requeueable"] == own]


async def _fill(broker, job_id, n, **info):
    """``n`` failed entries written as a worker writes them (DeadLetters.copy), naming ``job_id``
    (an own failure, or with ``refused=True`` a refused message naming that id)."""
    template = await broker.js.get_msg(broker.layout.failed_stream, seq=1)
    meta = json.loads(template.headers[HEADER_META])
    dl = DeadLetters(broker, "test-filler", Counter())
    for i in range(n):
        jid = job_id.format(i=i)
        msg = types.SimpleNamespace(headers={HEADER_META: json.dumps({**meta, "id": jid})}, data=b"")
        await dl.copy(msg, "default", reason="filler", attempts=1, **info)


def _count_failed_gets(broker, monkeypatch) -> list[int]:
    """The sequences every get_msg on the failed stream asks for, from now on."""
    asked: list[int] = []
    get = broker.js.get_msg

    async def counting(stream, *args, **kw):
        if stream == broker.layout.failed_stream:
            asked.append(kw.get("seq"))
        return await get(stream, *args, **kw)

    monkeypatch.setattr(broker.js, "get_msg", counting)
    return asked


async def _set_record(broker, job_id, **fields):
    kv = await broker.kv(broker.layout.status_bucket)
    rec = {**await get_status(broker, job_id), **fields}
    await kv.put(job_id, encode_status(rec))


async def test_a_failed_job_is_found_with_one_read_of_the_failed_stream(broker, start_worker, monkeypatch):
    await start_worker()
    await _fail(broker)  # the template of the fillers
    await _fill(broker, "filler-{i}", 300)
    jid = await _fail(broker)
    (seq,) = await _seq_of(broker, jid)
    assert (await get_status(broker, jid))["failed_seq"] == seq
    asked = _count_failed_gets(broker, monkeypatch)
    raw = await failed._find(broker, jid)
    assert raw.seq == seq and asked == [seq]  # the old scan read all 302 entries
    assert await requeue_failed(broker, jid) == jid


async def test_a_forged_failed_seq_naming_another_jobs_entry_is_not_believed(broker, start_worker):
    w = await start_worker()
    victim, other = await _fail(broker), await _fail(broker)
    (victim_seq,), (other_seq,) = await _seq_of(broker, victim), await _seq_of(broker, other)
    await _set_record(broker, victim, failed_seq=other_seq)
    assert (await failed._find(broker, victim)).seq == victim_seq
    # A refused message naming the victim's id is no failure of its own either.
    await _fill(broker, victim, 1, refused=True)
    (refused_seq,) = await _seq_of(broker, victim, own=False)
    await _set_record(broker, victim, failed_seq=refused_seq)
    assert (await failed._find(broker, victim)).seq == victim_seq
    for junk in (0, -1, 2**64, True, "7", None, [victim_seq]):  # never read, never a crash
        await _set_record(broker, victim, failed_seq=junk)
        assert (await failed._find(broker, victim)).seq == victim_seq
    await w.stop()  # the requeued job stays queued
    assert await requeue_failed(broker, victim) == victim
    assert [e["job_id"] for e in await failed.list_failed(broker) if e["requeueable"]] == [other]


async def test_a_stale_failed_seq_after_a_requeue_and_a_second_failure_finds_the_new_entry(
    broker, start_worker, tmp_path, monkeypatch
):
    await start_worker()
    jid = await _fail(broker, jobs.fail_until, str(tmp_path / "runs"), 3)
    first = await get_status(broker, jid)
    assert await requeue_failed(broker, jid) == jid
    assert (await wait_for_result(broker, jid, 15)).status == "failed"  # its second run failed too
    (second_seq,) = await _seq_of(broker, jid)
    assert second_seq != first["failed_seq"]
    assert (await get_status(broker, jid))["failed_seq"] == second_seq  # the new failure's own record
    await _set_record(broker, jid, failed_seq=first["failed_seq"])  # the first failure's (deleted) entry
    assert (await failed._find(broker, jid)).seq == second_seq
    assert await requeue_failed(broker, jid) == jid
    assert (await wait_for_result(broker, jid, 15)).unwrap() == 3


async def test_without_a_status_record_the_scan_finds_the_oldest_own_failure(broker, start_worker):
    w = await start_worker()
    jid = await _fail(broker)
    await w.stop()  # the requeued job stays queued
    (seq,) = await _seq_of(broker, jid)
    await _fill(broker, jid, 1, refused=True)  # after it, and refused: the scan's second choice
    kv = await broker.kv(broker.layout.status_bucket)
    await kv.purge(jid)  # expired, say
    assert (await failed._find(broker, jid)).seq == seq
    assert await requeue_failed(broker, jid) == jid
    # Its own failure requeued, the refused message naming its id is all that is left to find.
    refused = await failed._find(broker, jid)
    assert refused.seq > seq
    with pytest.raises(Exception, match="was refused, not run"):
        await requeue_failed(broker, jid)


async def test_an_unknown_id_is_not_found_as_before(broker, start_worker):
    await start_worker()
    await _fail(broker)
    for ref in ("no-such-job", "not a job id!", "x" * 300):
        with pytest.raises(JobNotFoundError, match=f"no failed job with id {ref!r}"):
            await requeue_failed(broker, ref)


async def test_ids_without_a_hint_share_one_pass_over_the_failed_stream(broker, start_worker, monkeypatch):
    w = await start_worker()
    await _fail(broker)  # the template of the fillers
    await _fill(broker, "filler-{i}", 100)
    ids = [await _fail(broker) for _ in range(4)]  # behind the fillers: a scan for each reads 100 first
    await w.stop()  # the requeued jobs stay queued
    kv = await broker.kv(broker.layout.status_bucket)
    for jid in ids:
        await kv.purge(jid)  # no hints: every one needs the scan
    info = await broker.js.stream_info(broker.layout.failed_stream)
    asked = _count_failed_gets(broker, monkeypatch)
    finder = FailedFinder(broker, ids)
    assert [await requeue_failed(broker, jid, finder=finder) for jid in reversed(ids)] == ids[::-1]
    # One pass (105 entries) and a re-read of each noted entry: a scan per id made some 400 reads.
    assert len(asked) <= info.state.messages + len(ids), len(asked)
    with pytest.raises(JobNotFoundError):  # all requeued: the finder reads again what it noted, and finds them gone
        await failed._find(broker, ids[0], finder)


async def test_a_finder_sees_entries_added_after_its_pass(broker, start_worker):
    await start_worker()
    early = await _fail(broker)
    finder = FailedFinder(broker, [early, "late-job"])
    assert (await finder.find(early)) is not None
    assert await finder.find("late-job") is None
    await _fill(broker, "late-job", 1)
    late = await finder.find("late-job")  # read on from where the pass stopped
    assert late is not None and failed._entry_id(late) == "late-job"
    assert late.seq == finder.upto
