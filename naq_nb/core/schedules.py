"""Schedules: delayed jobs, cron and interval recurrences, stored in the schedules bucket.

A schedule is one KV entry (key :meth:`Layout.schedule_key`) holding a JSON head
line and the already-serialized job body, so the scheduler can fire it without
ever unpickling anything. Its head carries the calendar (``once`` at a time,
``cron`` with an optional timezone, or ``interval`` seconds), the next due time,
the run count, ``repeat``, the misfire policy and the job's metadata template.

Time is UTC inside: epoch seconds everywhere; naive datetimes are read as UTC.
A due time in the past runs at once. Occurrence ids are deterministic
(``<schedule id>-<due ms>``; a one-shot delayed job keeps its own id), so a
re-fire is dropped by JetStream de-duplication.

Misfires: an occurrence later than ``misfire_grace`` seconds (default 30) counts
as missed. ``misfire="once"`` (default) fires one catch-up run for all missed
occurrences, then continues on the calendar; ``"all"`` fires each missed one
(at most 1,000); ``"skip"`` fires none of them. Occurrences within the grace
(for example those a failover delayed) always fire, each exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence, TypedDict

from croniter import croniter
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from .broker import Broker
from .envelope import HEADER_META, HEADER_MSG_ID, HEADER_SIG, MetaHeader, encode_job
from .deps import settle_dependents
from .errors import (
    ConfigurationError,
    DuplicateJobError,
    JobNotFoundError,
    NaqException,
    ScheduleNotFoundError,
    SerializationError,
)
from .job import Job, JobStatus
from .kvscan import scan_bucket
from .layout import validate_job_id, validate_queue_name
from .queued import get_status
from .status import decode_status, encode_status, status_record
from .timespec import EARLIEST, LATEST, check_interval, positive_seconds, to_epoch, validate_cron, zone
from .serialization import pack_record, sign_job, unpack_record, verify_job

__all__ = [
    "Schedule",
    "ScheduleRow",
    "ScheduleNotFoundError",
    "MISFIRE_POLICIES",
    "make_schedule",
    "save_schedule",
    "load_schedule",
    "read_schedule",
    "publish_schedule_status",
    "list_schedules",
    "change_schedule",
    "occurrence_id",
    "occurrences_due",
    "job_message",
    "why_not_fire",
    "require_calendar",
]

MISFIRE_POLICIES = ("once", "all", "skip")
KINDS = ("once", "cron", "interval")
MAX_CATCH_UP = 1000  # occurrences one check fires at most (missed ones under misfire="all", or due in the grace)

log = logging.getLogger("naq_nb.schedules")


class ScheduleRow(TypedDict):
    """A schedule as listings show it (:meth:`Schedule.to_row`): its head without the job template."""

    queue: str
    function: str
    kind: str  # "once" | "cron" | "interval"
    next_run: float | None
    cron: str | None
    timezone: str | None
    interval: float | None
    repeat: int | None
    runs: int
    paused: bool
    misfire: str
    misfire_grace: float
    created_at: float
    last_run: float | None
    last_job_id: str | None
    failures: int  # fires that failed in a row (the scheduler waits longer after each); 0 once one succeeds
    last_error: str | None  # why the last of them failed
    schedule_id: str
    status: str  # "active" | "paused" | "finished"


@dataclass
class Schedule:
    """A schedule's head record (the job body travels beside it)."""

    id: str
    queue: str
    function: str
    kind: str  # "once" | "cron" | "interval"
    next_run: float | None  # epoch seconds; None once finished
    cron: str | None = None
    timezone: str | None = None
    interval: float | None = None
    repeat: int | None = None  # total runs; None = forever
    runs: int = 0
    paused: bool = False
    misfire: str = "once"
    misfire_grace: float = 30.0
    created_at: float = field(default_factory=time.time)
    last_run: float | None = None
    last_job_id: str | None = None
    failures: int = 0  # consecutive failed fires (see fire_backoff.py)
    last_error: str | None = None
    # The job's Naq-Meta template; {} only for a bare calendar (no job: the scheduler's unit tests)
    meta: MetaHeader = field(default_factory=dict)  # type: ignore[assignment]
    sig: str | None = None
    revision: int = 0  # KV revision it was read at (not stored)

    # --- calendar ------------------------------------------------------------
    def following(self, after: float) -> float | None:
        """The first occurrence strictly after ``after`` (None for a one-shot, or past the year 9999)."""
        if self.kind == "interval":
            assert self.interval
            return after + self.interval
        if self.kind == "cron":
            assert self.cron
            if after >= LATEST:
                return None
            tz = zone(self.timezone)
            start = datetime.fromtimestamp(max(after, EARLIEST), tz)
            steps = croniter(self.cron, start)
            nxt = float(steps.get_next(float))
            # A clock set back repeats an hour (Paris's autumn night shows 02:00-02:59 twice): a
            # wall-clock time runs once, at its first showing, as cron runs it. The second showing
            # is the one a zone marks fold=1; every time the schedule matches in it is skipped.
            for _ in range(1000):
                if nxt > LATEST or not datetime.fromtimestamp(nxt, tz).fold:
                    break
                nxt = float(steps.get_next(float))
            return nxt if nxt <= LATEST else None
        return None

    def last_before(self, horizon: float, first: float) -> float:
        """The latest occurrence before ``horizon``, counting from ``first`` (an occurrence before it),
        found in one step however many lie between."""
        if self.kind == "interval":
            assert self.interval
            last = first + max(0, math.ceil((horizon - first) / self.interval) - 1) * self.interval
            return last if last < horizon else max(first, last - self.interval)
        assert self.cron
        start = datetime.fromtimestamp(min(max(horizon, EARLIEST), LATEST), zone(self.timezone))
        return max(first, float(croniter(self.cron, start).get_prev(float)))

    @property
    def remaining(self) -> int | None:
        return None if self.repeat is None else max(0, self.repeat - self.runs)

    def to_row(self) -> ScheduleRow:
        return {
            "queue": self.queue,
            "function": self.function,
            "kind": self.kind,
            "next_run": self.next_run,
            "cron": self.cron,
            "timezone": self.timezone,
            "interval": self.interval,
            "repeat": self.repeat,
            "runs": self.runs,
            "paused": self.paused,
            "misfire": self.misfire,
            "misfire_grace": self.misfire_grace,
            "created_at": self.created_at,
            "last_run": self.last_run,
            "last_job_id": self.last_job_id,
            "failures": self.failures,
            "last_error": self.last_error,
            "schedule_id": self.id,
            "status": "paused" if self.paused else ("finished" if self.next_run is None else "active"),
        }

    # --- storage ---------------------------------------------------------------
    def encode(self, body: bytes) -> bytes:
        head = {k: v for k, v in asdict(self).items() if k != "revision"}
        return pack_record(head, body)

    @classmethod
    def decode(cls, data: bytes, revision: int = 0) -> tuple["Schedule", bytes]:
        """The record's schedule and job body; :class:`SerializationError` for anything the scheduler
        could not run (the bucket is writable by anyone with the credentials, so never trust its shape)."""
        head, body = unpack_record(data)
        if not isinstance(head, dict):
            raise SerializationError(
                f"malformed schedule record: its head is a JSON {type(head).__name__}, not an object"
            )
        known = {k: v for k, v in head.items() if k in cls.__dataclass_fields__ and k != "revision"}
        _check_head(known)
        return cls(**known, revision=revision), body


# --- what a stored head must hold ---------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _or_null(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


# field -> (check, what it must be); a field left out of a record takes the dataclass default.
_HEAD_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "queue": (_is_str, "a string"),
    "function": (_is_str, "a string"),
    "kind": (lambda v: v in KINDS, f"one of {KINDS}"),
    # Not required finite: records stored before due times were checked hold NaN; listings show it as
    # invalid, the scheduler skips it and ``modify`` (next_run=...) repairs it.
    "next_run": (_or_null(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number or null"),
    "cron": (_or_null(_is_str), "a string or null"),
    "timezone": (_or_null(_is_str), "a string or null"),
    "interval": (_or_null(lambda v: _is_number(v) and v > 0), "a finite number > 0 or null"),
    "repeat": (_or_null(lambda v: _is_count(v) and v >= 1), "an integer >= 1 or null"),
    "runs": (_is_count, "an integer >= 0"),
    "paused": (lambda v: isinstance(v, bool), "true or false"),
    "misfire": (lambda v: v in MISFIRE_POLICIES, f"one of {MISFIRE_POLICIES}"),
    "misfire_grace": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "created_at": (_is_number, "a finite number"),
    "last_run": (_or_null(_is_number), "a finite number or null"),
    "last_job_id": (_or_null(_is_str), "a string or null"),
    "failures": (_is_count, "an integer >= 0"),
    "last_error": (_or_null(_is_str), "a string or null"),
    "meta": (lambda v: isinstance(v, dict), "an object"),
    "sig": (_or_null(_is_str), "a string or null"),
}
_REQUIRED = ("id", "queue", "function", "kind", "next_run")


def _check_head(head: dict[str, Any]) -> None:
    """Raise :class:`SerializationError` naming the first field of ``head`` a schedule cannot have."""
    missing = [k for k in _REQUIRED if k not in head]
    if missing:
        raise SerializationError(f"malformed schedule record: no {', '.join(missing)}")
    for name, value in head.items():
        check, what = _HEAD_FIELDS[name]
        if not check(value):
            raise SerializationError(f"malformed schedule record: {name} must be {what}, not {value!r}")
    try:
        _check_calendar(head)
    except ConfigurationError as exc:  # the same rules as at the call, reported as a bad record
        raise SerializationError(f"malformed schedule record: {exc}") from None


def _check_calendar(head: dict[str, Any]) -> None:
    """The fields firing reads: the queue subject, the cron or interval its kind needs, the timezone."""
    validate_queue_name(head["queue"])
    if head["kind"] == "cron":
        validate_cron(head.get("cron"))
    elif head["kind"] == "interval":
        if head.get("interval") is None:
            raise ConfigurationError("an interval schedule needs interval")
        check_interval(head["interval"])
    zone(head.get("timezone"))


def occurrence_id(s: Schedule, due: float) -> str:
    """Deterministic job id of one firing: a one-shot keeps the schedule's id."""
    return s.id if s.kind == "once" else f"{s.id}-{int(round(due * 1000))}"


def occurrences_due(s: Schedule, now: float) -> tuple[list[float], float | None]:
    """``(due times to fire now, next due time after them)`` under the misfire policy.

    An occurrence more than ``misfire_grace`` before ``now`` was missed: ``all`` fires up to
    :data:`MAX_CATCH_UP` of them, ``once`` one (the latest) for all, ``skip`` none; the rest are
    stepped over in one calculation, so a calendar years behind costs what one a minute behind does.
    """
    if s.next_run is None or s.paused or s.next_run > now:
        return [], s.next_run
    if s.kind == "once":
        return [s.next_run], None
    horizon = now - s.misfire_grace
    due: list[float] = []
    t: float | None = s.next_run
    if s.misfire == "all":
        while t is not None and t < horizon and len(due) < MAX_CATCH_UP:
            due.append(t)
            t = s.following(t)
    if t is not None and t < horizon:
        last = s.last_before(horizon, t)
        if s.misfire == "once":
            due.append(last)  # one run, at the latest missed time, stands for all of them
        t = s.following(last)
    while t is not None and t <= now and len(due) < MAX_CATCH_UP:
        due.append(t)
        t = s.following(t)
    if t is not None and t <= now:  # more due within the grace than one check fires: on from now
        t = s.following(now)
    budget = s.remaining
    if budget is not None and len(due) >= budget:
        return due[:budget], None
    return due, t


def why_not_fire(status_value: bytes | None) -> tuple[str | None, bool]:
    """Whether an occurrence whose status record holds ``status_value`` may be published:
    ``(None, marked)`` if so (no record yet, ``scheduled``, or ``queued`` = ``marked`` by a fire that
    may have been cut short before publishing); else ``(why not, False)``: cancelled (a worker may
    not have heard of it), or published before (a worker moved it on). The last is a leader killed
    between its publish and the schedule's update, repeated later: past JetStream's de-duplication
    window a copy would run again, so only the status record can tell it ran."""
    try:
        status = decode_status(status_value or b"").get("status")
    except SerializationError:
        status = None  # an unreadable record tells nothing: the fire writes a readable one
    if status in (None, JobStatus.SCHEDULED.value, JobStatus.QUEUED.value):
        return None, status == JobStatus.QUEUED.value
    if status == JobStatus.CANCELLED.value:
        return "it was cancelled before it was due", False
    return f"it was published before (its status is {status!r}); a copy would run it twice", False


def job_message(s: Schedule, body: bytes, job_id: str, due: float, keys: Sequence[bytes] = ()) -> dict:
    """Headers for one firing: the template's metadata with this occurrence's id.

    With signing ``keys``, the stored template must verify (a schedule record
    forged in the bucket raises :class:`SignatureError`) before the firing is
    signed, bound to its own id, with the first key.
    """
    meta: MetaHeader = {**s.meta, "id": job_id, "ts": time.time(), "due": due, "sched": s.id}
    headers = {HEADER_MSG_ID: job_id, HEADER_META: json.dumps(meta, separators=(",", ":"))}
    if keys:
        verify_job(keys, s.id, json.dumps(s.meta, separators=(",", ":")), body, s.sig)
        headers[HEADER_SIG] = sign_job(keys[0], job_id, headers[HEADER_META], body)
    return headers


def require_calendar(cron: Any, interval: Any) -> None:
    """A recurring schedule has exactly one of ``cron`` and ``interval``."""
    if (cron is None) == (interval is None):
        raise ConfigurationError(
            "schedule() needs exactly one of cron=... or interval=..."
            + (" (both were given)" if cron is not None else "")
        )


def make_schedule(
    job: Job,
    broker: Broker,
    *,
    when: float | None = None,
    cron: str | None = None,
    interval: float | timedelta | None = None,
    repeat: int | None = None,
    tz: str | None = None,
    misfire: str = "once",
    misfire_grace: float = 30.0,
    now: float | None = None,
) -> tuple[Schedule, bytes]:
    """Validate the calendar and serialize the job; raises at the call, nothing is stored."""
    if cron is not None and interval is not None:
        raise ConfigurationError("give cron or interval, not both")
    if when is None and cron is None and interval is None:
        raise ConfigurationError("a schedule needs cron=..., interval=... or a time")
    if isinstance(interval, timedelta):
        interval = interval.total_seconds()
    if interval is not None:
        check_interval(interval)
    positive_seconds(misfire_grace, "misfire_grace", zero_ok=True)
    if when is not None:
        when = to_epoch(when, "when")
    if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1):
        raise ConfigurationError(f"repeat must be an int >= 1 or None (forever), not {repeat!r}")
    if misfire not in MISFIRE_POLICIES:
        raise ConfigurationError(f"misfire must be one of {MISFIRE_POLICIES}, not {misfire!r}")
    if cron is not None:
        validate_cron(cron)
    zone(tz)
    headers, body = encode_job(
        job, broker.serializer, signing_key=broker.settings.signing_key, max_payload=broker.max_payload
    )
    now = time.time() if now is None else now
    kind = "cron" if cron else "interval" if interval else "once"
    s = Schedule(
        id=job.job_id,
        queue=job.queue_name,
        function=job.function_name,
        kind=kind,
        next_run=None,
        cron=cron,
        timezone=tz,
        interval=float(interval) if interval else None,
        repeat=repeat,
        misfire=misfire,
        misfire_grace=float(misfire_grace),
        meta=json.loads(headers[HEADER_META]),
        sig=headers.get(HEADER_SIG),
    )
    if when is not None:
        s.next_run = when
    elif kind == "interval":
        s.next_run = now + s.interval  # type: ignore[operator]
    else:
        s.next_run = s.following(now)
    return s, body


async def publish_schedule_status(broker: Broker, s: Schedule, state: JobStatus, **extra: Any) -> None:
    """The schedule's own record in the status bucket (a watcher sees it with its next due time)."""
    lay = broker.layout
    rec = status_record(
        s.id,
        s.queue,
        state,
        func=s.function,
        schedule=s.kind,
        due_at=s.next_run,
        runs=s.runs,
        repeat=s.repeat,
        cron=s.cron,
        interval=s.interval,
        paused=s.paused,
        last_job_id=s.last_job_id,
        **extra,
    )
    await broker.js.publish(lay.kv_subject(lay.status_bucket, s.id), encode_status(rec))


async def save_schedule(broker: Broker, s: Schedule, body: bytes) -> Schedule:
    """Store a new schedule (its id must be free) and mark it ``scheduled``. A one-shot runs under
    its own id, which must not be a job's already (:class:`DuplicateJobError`)."""
    if s.kind == "once":
        await _refuse_a_used_job_id(broker, s.id)
    kv = await broker.kv(broker.layout.schedules_bucket)
    try:
        s.revision = await kv.create(broker.layout.schedule_key(s.id), s.encode(body))
    except KeyWrongLastSequenceError:
        raise ConfigurationError(f"a schedule with id {s.id!r} already exists") from None
    await publish_schedule_status(broker, s, JobStatus.SCHEDULED)
    return s


async def _refuse_a_used_job_id(broker: Broker, job_id: str) -> None:
    """A delayed job given the id of a job that was enqueued, ran or has a result would never run:
    JetStream drops its message as that job's copy (within its de-duplication window), or its
    result loses to the stored one, while its status read ``queued`` for ever. Refused at the call.
    (A one-shot cancelled before it fired, with no result stored, leaves the id free.)"""
    status = None
    try:
        status = (await get_status(broker, job_id)).get("status")
    except (JobNotFoundError, SerializationError):
        pass  # no record, or one that tells nothing: the schedule's own record replaces it
    if status in (None, JobStatus.SCHEDULED.value, JobStatus.CANCELLED.value):
        try:  # (any value under the key: an unreadable or expired result still holds it)
            stored = (await (await broker.kv(broker.layout.results_bucket)).get(job_id)).value
        except KeyNotFoundError:
            stored = None
        if not stored:
            return
        status = "ended (its result is stored)"
    raise DuplicateJobError(
        f"job id {job_id!r} is already used by a job that is {status}; a delayed job runs under its own id, "
        "so it needs a new one (or leave job_id unset)"
    )


async def load_schedule(broker: Broker, schedule_id: str) -> tuple[Schedule, bytes]:
    kv = await broker.kv(broker.layout.schedules_bucket)
    try:
        entry = await kv.get(broker.layout.schedule_key(schedule_id))
    except KeyNotFoundError:
        raise ScheduleNotFoundError(f"no scheduled job with id {schedule_id!r}") from None
    if entry.value is None:
        raise ScheduleNotFoundError(f"no scheduled job with id {schedule_id!r}")
    return read_schedule(schedule_id, entry.value, entry.revision or 0)


def read_schedule(schedule_id: str, data: bytes, revision: int = 0) -> tuple[Schedule, bytes]:
    """The record stored under ``schedule_id``'s key; :class:`SerializationError` naming the id if malformed."""
    try:
        s, body = Schedule.decode(data, revision)
        if s.id != schedule_id:  # firing and control address the record by its own id
            raise SerializationError(f"malformed schedule record: it holds id {s.id!r}")
    except SerializationError as exc:
        raise SerializationError(f"schedule {schedule_id!r}: {exc}") from None
    return s, body


async def list_schedules(broker: Broker) -> list[Schedule]:
    """Every stored schedule, soonest first; a malformed record is logged and left out, not fatal to the list."""
    out = []
    async for item in scan_bucket(broker, broker.layout.schedules_bucket):
        try:
            out.append(read_schedule(item.key.split(".", 1)[-1], item.value, item.revision)[0])
        except SerializationError as exc:
            log.warning("skipping %s in the schedules listing: %s", item.key, exc)
    return sorted(out, key=lambda s: (s.next_run is None, s.next_run or 0.0))


async def change_schedule(broker: Broker, schedule_id: str, action: str, **changes: Any) -> Schedule | None:
    """``pause`` / ``resume`` / ``cancel`` / ``modify`` a schedule, revision-checked against the scheduler."""
    validate_job_id(schedule_id, "schedule_id")
    kv = await broker.kv(broker.layout.schedules_bucket)
    key = broker.layout.schedule_key(schedule_id)
    for _ in range(20):
        try:
            s, body = await load_schedule(broker, schedule_id)
        except SerializationError as exc:
            if action != "cancel":
                raise
            await _delete_malformed(kv, key, exc)  # the one way to be rid of a forged or damaged record
            return None
        try:
            if action == "cancel":
                await kv.delete(key, last=s.revision)
                await publish_schedule_status(broker, s, JobStatus.CANCELLED, finished_at=time.time())
                await settle_dependents(broker, s.id, "cancelled")
                return None
            s = _apply(s, action, changes)
            s.revision = await kv.update(key, s.encode(body), last=s.revision)
        except KeyWrongLastSequenceError:
            continue  # the scheduler fired meanwhile: apply to the fresh record
        await publish_schedule_status(broker, s, JobStatus.SCHEDULED)
        return s
    raise NaqException(f"schedule {schedule_id!r} kept changing; {action} not applied")


async def _delete_malformed(kv: Any, key: str, why: SerializationError) -> None:
    entry = await kv.get(key)
    await kv.delete(key, last=entry.revision)  # (revision-checked: a repaired record stays)
    log.warning("cancelled %s by deleting it: %s", key, why)


_MODIFIABLE = {"cron", "interval", "repeat", "next_run", "timezone", "misfire", "misfire_grace"}


def _apply(s: Schedule, action: str, changes: dict) -> Schedule:
    if action == "pause":
        return replace(s, paused=True)
    if action == "resume":
        nxt = s.next_run
        if nxt is not None and s.kind != "once" and nxt <= time.time():
            nxt = s.following(time.time())  # resuming does not release the runs missed while paused
        return replace(s, paused=False, next_run=nxt)
    if action != "modify":
        raise ValueError(f"unknown schedule action {action!r}; use cancel, pause, resume or modify")
    unknown = set(changes) - _MODIFIABLE
    if unknown:
        raise ConfigurationError(f"cannot modify {', '.join(sorted(unknown))}; modifiable: {sorted(_MODIFIABLE)}")
    c = dict(changes)
    if c.get("cron") is not None and c.get("interval") is not None:
        raise ConfigurationError("give cron or interval, not both")
    if "next_run" in c and c["next_run"] is not None:
        c["next_run"] = to_epoch(c["next_run"], "next_run")
    if isinstance(c.get("interval"), timedelta):
        c["interval"] = c["interval"].total_seconds()
    if c.get("cron") is not None:
        validate_cron(c["cron"])
        c.update(kind="cron", interval=None)
    elif c.get("interval") is not None:
        check_interval(c["interval"])
        c.update(kind="interval", cron=None)
    if "misfire_grace" in c:
        c["misfire_grace"] = positive_seconds(c["misfire_grace"], "misfire_grace", zero_ok=True)
    if c.get("repeat") is not None and (
        isinstance(c["repeat"], bool) or not isinstance(c["repeat"], int) or c["repeat"] < 1
    ):
        raise ConfigurationError(f"repeat must be an int >= 1 or None, not {c['repeat']!r}")
    if "misfire" in c and c["misfire"] not in MISFIRE_POLICIES:
        raise ConfigurationError(f"misfire must be one of {MISFIRE_POLICIES}, not {c['misfire']!r}")
    zone(c.get("timezone", s.timezone))
    s = replace(s, **c)
    # The whole calendar as it would be stored (a None for the kind's own field, say), before storing it.
    _check_calendar({"queue": s.queue, "kind": s.kind, "cron": s.cron, "interval": s.interval, "timezone": s.timezone})
    if "next_run" not in c and ({"cron", "interval", "timezone"} & set(c)):
        s.next_run = s.following(time.time())  # a new calendar starts from now
    return s
