"""Forged or damaged records where dependencies and the failed stream read them.

A dependency whose status record is damaged must fail its dependents naming it (never a loop, never
waiting for ever); a dead letter that is no naq_nb record must not break a listing; a requeue of an
entry that is no valid job must change nothing, least of all another job's result.
"""

import json

import pytest

from naq_nb.core.deps import parked_deps, sweep_waiting
from naq_nb.core.errors import SerializationError
from naq_nb.core.failed import list_failed, requeue_failed
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.results import get_result, wait_for_result
from naq_nb.core.serialization import pack_record

import jobs
from helpers import eventually


async def _put_status(broker, job_id: str, value: bytes | None) -> None:
    kv = await broker.kv(broker.layout.status_bucket)
    await (kv.delete(job_id) if value is None else kv.put(job_id, value))


def _failed_with(broker, job_id: str, text: str):
    async def check():
        rec = await wait_for_result(broker, job_id, 0.2) if await _ended(broker, job_id) else None
        return rec is not None and rec.status == "failed" and text in (rec.meta.get("error") or "")

    return check


async def _ended(broker, job_id: str) -> bool:
    return (await get_status(broker, job_id)).get("status") in ("failed", "succeeded", "cancelled")


@pytest.mark.parametrize("forged", [b'{"status": [1]}', b'{"status": 5}', b'{"status": "bogus"}', b"\x00garbage"])
async def test_a_dependent_of_a_job_whose_status_is_damaged_fails_naming_it(broker, start_worker, forged):
    dep = await Queue(broker, "nobody").enqueue(jobs.add, 1, 1)  # no worker serves it
    await _put_status(broker, dep.job_id, forged)
    child = await Queue(broker).configure(depends_on=[dep]).enqueue(jobs.add, 2, 2)
    await start_worker()
    await eventually(_failed_with(broker, child.job_id, "damaged status record"), timeout=15,
                     what="the dependent failed naming the damaged record")


@pytest.mark.parametrize("forged", [b'{"status": [1]}', b"\x00garbage", None], ids=["list", "garbage", "deleted"])
async def test_a_parked_dependent_whose_dependency_record_is_later_damaged_or_gone_is_failed_by_the_sweep(
    broker, start_worker, forged
):
    dep = await Queue(broker, "nobody").enqueue(jobs.add, 1, 1)
    child = await Queue(broker).configure(depends_on=[dep]).enqueue(jobs.add, 2, 2)
    await start_worker()

    async def parked():  # its status says so first, then its copy lands in the waiting stream
        waiting = (await get_status(broker, child.job_id)).get("status") == "waiting"
        return waiting and dep.job_id in await parked_deps(broker)

    await eventually(parked, timeout=15, what="the dependent parked")
    await _put_status(broker, dep.job_id, forged)
    await sweep_waiting(broker)  # (a worker runs it every 30 s)
    why = "does not exist" if forged is None else "damaged status record"
    await eventually(_failed_with(broker, child.job_id, why), timeout=15, what="the dependent failed")


async def _dead_letter(broker, data: bytes, headers: dict | None = None) -> None:
    await broker.js.publish(broker.layout.failed_subject("default"), data, headers=headers)


async def test_a_dead_letter_that_is_no_record_is_listed_as_such_beside_the_others(broker):
    good = pack_record({"reason": "boom", "failed_at": 1.0e9, "attempts": 1}, b"")
    await _dead_letter(broker, good)
    await _dead_letter(broker, b"\x00not a record", headers={"Naq-Meta": "[1, 2]"})
    await _dead_letter(broker, pack_record({"reason": 7, "failed_at": 1e300, "attempts": "x"}, b""))
    entries = await list_failed(broker)
    assert [e["reason"] for e in entries][0] == "boom"
    assert "unreadable failed entry" in entries[1]["reason"] and entries[1]["job_id"] is None
    assert entries[2]["reason"] == "7" and entries[2]["failed_at"] is None and entries[2]["attempts"] is None
    assert not any(e["requeueable"] for e in entries)
    with pytest.raises(SerializationError, match=f"failed entry {entries[1]['seq']} is unreadable"):
        await requeue_failed(broker, entries[1]["seq"])


async def test_requeuing_a_forged_entry_naming_a_finished_job_changes_nothing(broker, start_worker):
    await start_worker()
    real = await Queue(broker).enqueue(jobs.add, 3, 4)
    assert (await wait_for_result(broker, real.job_id, 15)).unwrap() == 7
    meta = json.dumps({"id": real.job_id, "q": "no such queue!", "fn": "jobs.add"})
    await _dead_letter(broker, pack_record({"reason": "forged", "original_headers": {"Naq-Meta": meta}}, b"x"))
    (entry,) = [e for e in await list_failed(broker) if e["reason"] == "forged"]
    assert entry["requeueable"] is False
    with pytest.raises(SerializationError, match=f"failed entry {entry['seq']} cannot be requeued: .*q \\(queue\\)"):
        await requeue_failed(broker, entry["seq"])
    assert (await get_result(broker, real.job_id)).unwrap() == 7  # its result and status are untouched
    assert (await get_status(broker, real.job_id))["status"] == "succeeded"
