"""Schedule records forged or damaged in the schedules bucket: skipped with a warning, never fatal.

The bucket is writable by anyone holding the credentials, so the scheduler, the listings and
the control calls must survive any bytes under a schedule key: the scheduler and listings skip
the record (naming its key), a control call on it raises SerializationError naming its id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import pytest

import naq_nb as nq
from naq_nb.core.errors import ScheduleNotFoundError, SerializationError
from naq_nb.core.queue import Queue, get_status
from naq_nb.core.scheduler import Scheduler
from naq_nb.core.schedules import Schedule, list_schedules, load_schedule, make_schedule, save_schedule

import jobs
from helpers import Services, eventually


# The head fields each forged record gets wrong (over a valid record's head), by schedule id.
BAD_HEADS: dict[str, dict] = {
    "fnextstr": {"next_run": "soon"},
    "fkind": {"kind": "weekly"},
    "fcron": {"kind": "cron", "cron": "not a cron", "interval": None},
    "fintneg": {"interval": -5},
    "fint0": {"interval": 0},
    "ftz": {"kind": "cron", "cron": "* * * * *", "interval": None, "timezone": "Mars/Base"},
    "fmeta": {"meta": "notadict"},
    "fqueue": {"queue": "bad.queue"},
    "fruns": {"runs": "3"},
    "fpaused": {"paused": "yes"},
    "frepeat": {"repeat": "ten"},
    "fmisfire": {"misfire": "never"},
    "fgrace": {"misfire_grace": "x"},
    "fid": {"id": "other id!"},
}
# Whole heads that are not a schedule at all.
BAD_BYTES: dict[str, bytes] = {
    "fbadjson": b"{nope\n",
    "flist": b"[1]\n",
    "fstring": b'"text"\n',
    "fnull": b"null\n",
    "fempty": b"{}\n",
}
FORGED_IDS = sorted([*BAD_HEADS, *BAD_BYTES])


async def stored_schedule(broker, **calendar) -> Schedule:
    job = Queue(broker, "forgedq").make_job(jobs.add, (1, 2))
    s, body = make_schedule(job, broker, **calendar)
    return await save_schedule(broker, s, body)


def forged_records(valid: Schedule, body: bytes) -> dict[str, bytes]:
    """Every bad record by schedule id, built from a valid head so only the named field is wrong."""
    head = json.loads(valid.encode(body).partition(b"\n")[0])
    out = {sid: json.dumps({**head, "id": sid, **over}).encode() + b"\n" + body for sid, over in BAD_HEADS.items()}
    return {**out, **BAD_BYTES}


async def forge(broker, valid: Schedule) -> None:
    """Write the forged records by hand, beside the valid schedule."""
    _, body = await load_schedule(broker, valid.id)
    kv = await broker.kv(broker.layout.schedules_bucket)
    for sid, value in forged_records(valid, body).items():
        await kv.put(broker.layout.schedule_key(sid), value)


@pytest.fixture
async def start_scheduler(settings):
    services = Services()

    async def _start() -> Scheduler:
        return await services.start(Scheduler(settings=settings))

    yield _start
    await services.stop_all(graceful=True)


async def runs_reach(broker, schedule_id: str, n: int) -> None:
    async def reached():
        s, _ = await load_schedule(broker, schedule_id)
        return s.runs >= n

    await eventually(reached, 20, f"schedule {schedule_id} to run {n} times")


# --- decoding ---------------------------------------------------------------------


async def test_decode_raises_serialization_error_for_every_forged_record(broker):
    valid = await stored_schedule(broker, when=time.time() + 3600)
    _, body = await load_schedule(broker, valid.id)
    for sid, value in forged_records(valid, body).items():
        if sid == "fid":
            continue  # a well-formed record under the wrong key: only reading it by its key can tell
        with pytest.raises(SerializationError, match="malformed"):
            Schedule.decode(value)


# --- the scheduler ------------------------------------------------------------------


async def test_scheduler_started_with_forged_records_fires_the_valid_one(broker, start_scheduler, caplog):
    valid = await stored_schedule(broker, interval=0.2)
    await forge(broker, valid)
    # A NaN due time decodes (records from before times were checked; listings show it as invalid),
    # but the scheduler must skip it rather than fire or crash.
    nan = await stored_schedule(broker, interval=0.2)
    _, body = await load_schedule(broker, nan.id)
    kv = await broker.kv(broker.layout.schedules_bucket)
    await kv.put(broker.layout.schedule_key(nan.id), replace(nan, next_run=float("nan")).encode(body))
    with caplog.at_level(logging.WARNING, logger="naq_nb.scheduler"):
        sch = await start_scheduler()  # the first scan reads every forged record
    await runs_reach(broker, valid.id, 2)
    assert set(sch.schedules) == {valid.id}
    for sid in [*FORGED_IDS, nan.id]:
        assert f"s.{sid}" in caplog.text, f"no warning naming s.{sid}"


async def test_forged_records_while_running_leave_the_watch_alive(broker, start_scheduler):
    await start_scheduler()
    valid = await stored_schedule(broker, when=time.time() + 3600)
    await forge(broker, valid)
    # A schedule created after the forged records: the watch must still be reading the bucket.
    later = await stored_schedule(broker, interval=0.2)
    await runs_reach(broker, later.id, 2)


# --- listings and control calls -----------------------------------------------------


async def test_listings_skip_forged_records(broker, settings, caplog):
    valid = await stored_schedule(broker, when=time.time() + 3600)
    await forge(broker, valid)
    with caplog.at_level(logging.WARNING, logger="naq_nb.schedules"):
        assert [s.id for s in await list_schedules(broker)] == [valid.id]
    assert "s.fbadjson" in caplog.text and "s.flist" in caplog.text
    rows = await nq.list_scheduled(nats_url=settings.nats_url)
    assert [r["schedule_id"] for r in rows] == [valid.id]


@pytest.mark.parametrize("action", ["pause", "resume", "modify"])
async def test_control_call_on_forged_record_raises_naming_it(broker, settings, action):
    valid = await stored_schedule(broker, when=time.time() + 3600)
    await forge(broker, valid)
    call = getattr(nq, f"{action}_scheduled_job")
    extra = {"interval": 60} if action == "modify" else {}
    for sid in FORGED_IDS:
        with pytest.raises(SerializationError, match=f"schedule '{sid}'"):
            await call(sid, nats_url=settings.nats_url, **extra)
    assert (await load_schedule(broker, valid.id))[0].id == valid.id  # the valid one is untouched


async def test_cancelling_a_forged_record_deletes_it(broker, settings):
    # Cancel is how a user gets rid of a schedule: a record nobody can read is deleted, not kept.
    valid = await stored_schedule(broker, when=time.time() + 3600)
    await forge(broker, valid)
    for sid in FORGED_IDS:
        await nq.cancel_scheduled_job(sid, nats_url=settings.nats_url)
        with pytest.raises(ScheduleNotFoundError):
            await load_schedule(broker, sid)
    assert (await load_schedule(broker, valid.id))[0].id == valid.id  # the valid one is untouched


async def test_a_one_shot_whose_status_record_is_forged_still_fires(broker, start_scheduler):
    # The fire reads the job's status record first (a repeated fire must not rewind a job that moved
    # on); an unreadable one must not stop the fire: it is replaced by a readable "queued".
    s = await stored_schedule(broker, when=time.time() + 0.3)
    await (await broker.kv(broker.layout.status_bucket)).put(s.id, b"[1]")
    await start_scheduler()
    q = Queue(broker, "forgedq")
    await eventually(lambda: _queued(q, broker, s.id), timeout=10, what="the one-shot fired")


async def _queued(q, broker, job_id):
    try:
        return await q.count() == 1 and (await get_status(broker, job_id))["status"] == "queued"
    except SerializationError:
        return False
