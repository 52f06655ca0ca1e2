"""Waiting for results by push: a subscription on the result key's subject, then a get.

A finished job is read with one direct get. Otherwise the subscription is made
before a second get, so a result written in between is never missed, and the
wait wakes the moment the worker's put lands; nothing polls. A job the caller
marked for a push to itself is waited for by that push alone for its first
:data:`_PUSH_ONLY` seconds (every writer of a result pushes: :func:`push_result`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import nats.errors

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from . import payloads
from .errors import JobNotFinishedError, JobNotFoundError, NaqConnectionError, SerializationError, SignatureError
from .layout import EARLY_MARK, WIRE_ID_RE, validate_job_id
from .records import ResultRecord
from .envelope import decode_meta, meta_first_record
from .status import TERMINAL_VALUES, StatusRecord, decode_status, initial_status

if TYPE_CHECKING:
    from .broker import Broker
    from .settings import Settings

__all__ = [
    "wait_for_result",
    "get_result",
    "decode_result",
    "result_gone_error",
    "push_result",
    "push_early",
    "early_target",
    "unrecorded_status",
    "check_timeout",
    "PUSH_LIMIT",
]

log = logging.getLogger("naq_nb.client")

#: Result records up to this size are pushed whole; a bigger one is announced by an empty push.
PUSH_LIMIT = 64 * 1024


async def push_result(broker: "Broker", token: str, job_id: str, record: bytes = b"") -> None:
    """Tell the client that enqueued ``job_id`` (its result inbox ``token``) that the job's result is
    stored: the sealed record itself, or an empty notice, "read it from the bucket" (a record over
    :data:`PUSH_LIMIT`, or one this writer did not write). Every writer of a result sends one, once
    the result is stored: a waiting read needs no subscription of its own. Best effort: the reader
    reads the bucket now and then, so a lost push only delays it. A token that is not a plain id
    (a forged status record's ``rt``) is not pushed to."""
    if not isinstance(token, str) or not WIRE_ID_RE.fullmatch(token):
        log.warning("job %s: not pushing its result to %r: not a result inbox token", job_id, token)
        return
    try:
        await broker.send(broker.layout.reply_subject(token, job_id), record if len(record) <= PUSH_LIMIT else b"")
    except (nats.errors.Error, NaqConnectionError) as exc:  # (a send the full socket held too long)
        log.debug("job %s: result not pushed to its client: %s", job_id, exc)


def early_target(token: object, record: bytes) -> tuple[str, str] | None:
    """Where one commit pushes ``record`` early (:func:`push_early`): ``(client token, run)``, run a
    fresh nonce naming this commit's record and writes; None unless that client takes early pushes
    (its token ends in :data:`.layout.EARLY_MARK`) and the record can go there whole."""
    if (
        isinstance(token, str)
        and token.endswith(EARLY_MARK)
        and len(record) <= PUSH_LIMIT
        and WIRE_ID_RE.fullmatch(token)
    ):
        return token, secrets.token_hex(4)
    return None


async def push_early(broker: "Broker", token: str, job_id: str, record: bytes, run: str) -> bool:
    """Push ``record`` while its writes are in flight (:meth:`.Layout.early_subject`). The client
    hands it out only once the acknowledgements of both writes, copied to it, prove it stored:
    the stored-result promise of :func:`push_result` at one hop less. False if it could not be
    sent (then the push after the writes tells the client)."""
    try:
        await broker.send(broker.layout.early_subject(token, job_id, broker.acks.id, run), record)
        return True
    except (nats.errors.Error, NaqConnectionError) as exc:  # (a send the full socket held too long)
        log.debug("job %s: result not pushed early to its client: %s", job_id, exc)
        return False


async def get_result(broker: "Broker", job_id: str) -> ResultRecord | None:
    """The result record if the job has ended, else None."""
    kv = await broker.kv(broker.layout.results_bucket)
    try:
        entry = await kv.get(job_id)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    rec = decode_result(broker.settings, job_id, entry.value)
    return None if rec.expired else rec


def decode_result(s: "Settings", job_id: str, data: bytes) -> ResultRecord:
    """A stored result as settings ``s`` accept it: sealed by a known key when signing is on,
    never pickled in JSON mode."""
    return ResultRecord.decode(data, job_id, s.signing_keys, accept_pickle=s.serializer == "pickle")


async def _status_record(broker: "Broker", job_id: str) -> dict | None:
    """The job's status record ({} when it is empty or unreadable); None when it has none."""
    kv = await broker.kv(broker.layout.status_bucket)
    try:
        entry = await kv.get(job_id)
    except KeyNotFoundError:
        return None
    try:
        return dict(decode_status(entry.value)) if entry.value else {}
    except (SerializationError, AttributeError):
        return {}


def _status_in(record: dict | None) -> str | None:
    return None if record is None else str(record.get("status") or "")


async def _status_of(broker: "Broker", job_id: str) -> str | None:
    """The job's status ("" when its record is empty or unreadable); None when it has no record."""
    return _status_in(await _status_record(broker, job_id))


def _schedule_run(job_id: str, record: dict | None) -> str | None:
    """For a recurring schedule's own record: the id of its latest run ("" before its first), which
    naq's ``fetch_result(schedule's id)`` reads (naq gives every run the schedule's id). None for any
    other record. Only an id of one of this schedule's own runs is followed, whatever the record says."""
    if record is None or not isinstance(record.get("schedule"), str) or record.get("schedule") == "once":
        return None
    last = record.get("last_job_id")
    return last if isinstance(last, str) and last.startswith(f"{job_id}-") else ""


async def _schedule_result(broker: "Broker", sid: str, record: dict | None, timeout: float | None) -> ResultRecord:
    """The result of schedule ``sid``'s latest run, waiting up to ``timeout`` for its first run."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    lay = broker.layout
    sub = await broker.nc.subscribe(lay.kv_subject(lay.status_bucket, sid))
    try:
        while not (run := _schedule_run(sid, record)):
            if run is None:  # its record expired or was deleted meanwhile (or is no schedule's any more)
                raise JobNotFoundError(f"no schedule with id {sid!r} (its record expired or was deleted)")
            if _status_in(record) in TERMINAL_VALUES:
                raise JobNotFoundError(f"schedule {sid} {_status_in(record)} without a run: it has no result")
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise JobNotFinishedError(f"schedule {sid} has not fired yet: its first run has no result")
            with contextlib.suppress(nats.errors.TimeoutError):  # a bounded wait for the record to change
                await sub.next_msg(timeout=min(left or _SAFETY_READS[-1], _SAFETY_READS[-1]))
            record = await _status_record(broker, sid)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    left = None if deadline is None else max(0.0, deadline - loop.time())
    return await wait_for_result(broker, run, left)


async def wait_for_result(
    broker: "Broker",
    job_id: str,
    timeout: float | None = None,
    *,
    pushed: "asyncio.Future[bytes] | None" = None,
    push_expected: bool = False,
    queued_seq: int | None = None,
) -> ResultRecord:
    """Wait until the job's result exists; ``timeout=0`` checks once, ``None`` waits forever.

    ``pushed``, if given, resolves with the stored record a worker pushed to the caller
    (:meth:`Layout.reply_subject`); it is checked like a read one and spares the read.
    ``push_expected``: the caller stored this job marked for that push and has not had it
    yet, so for :data:`_PUSH_ONLY` seconds the wait holds no subscription and reads nothing
    (see :func:`_wait_pushed`); a job still running then is waited for as any other.
    ``queued_seq``: the stream sequence of a job the caller stored without its queued record: while
    that message is in the jobs stream, a missing status record means "not started yet", not an
    unknown id.
    Raises :class:`JobNotFoundError` for an unknown id or a job that ended but whose result is gone
    (expired after its ``result_ttl``, or deleted), and :class:`TimeoutError` when the job is known
    but not finished in time.
    """
    validate_job_id(job_id)
    check_timeout(timeout)
    if pushed is not None and pushed.done() and not pushed.cancelled() and pushed.result():
        rec = _pushed_record(broker, job_id, pushed.result())  # pushed before the read: no round trip
        if rec is not None:
            return await payloads.load_result(broker, rec)
    await broker.ensure_layout()
    once = timeout is not None and timeout <= 0
    if push_expected and pushed is not None and not once:
        try:
            found = await _wait_pushed(
                broker, job_id, None, timeout, pushed, quiet_for=_PUSH_ONLY, queued_seq=queued_seq
            )
        except JobNotFinishedError:  # nothing came in time: the bucket decides
            return await wait_for_result(broker, job_id, 0, queued_seq=queued_seq)
        return await payloads.load_result(broker, found)
    # A job that has already ended costs one direct get and no subscription.
    rec = await get_result(broker, job_id)
    if rec is not None and (once or _long_done(rec) or _ended(await _status_or_unknown(broker, job_id))):
        return await payloads.load_result(broker, rec)
    if once:
        return await _unfinished_once(broker, job_id, queued_seq)
    return await _wait_subscribed(broker, job_id, timeout, pushed, queued_seq)


async def _wait_subscribed(
    broker: "Broker",
    job_id: str,
    timeout: float | None,
    pushed: "asyncio.Future[bytes] | None",
    queued_seq: int | None,
) -> ResultRecord:
    """:func:`wait_for_result` for a job not found ended at the first read: subscribed to its result key."""
    lay = broker.layout
    sub = await broker.nc.subscribe(lay.kv_subject(lay.results_bucket, job_id))
    try:
        # Read again once subscribed: a result stored before this read is seen here, one stored
        # after it wakes the subscription; none is missed. The status read (exists? ended?) rides along.
        rec, record = await asyncio.gather(get_result(broker, job_id), _status_record(broker, job_id))
        status = _status_in(record)
        if rec is not None and (_long_done(rec) or _ended(status)):
            return await payloads.load_result(broker, rec)
        if rec is None and _schedule_run(job_id, record) is not None:
            return await _schedule_result(broker, job_id, record, timeout)
        if status is None and not await _still_queued(broker, job_id, queued_seq):
            raise JobNotFoundError(f"no job with id {job_id!r} (never enqueued, or its records expired)")
        if rec is None and status in TERMINAL_VALUES:
            # Ended, and no result: it is being stored (another stream than the status) or it is
            # gone. A result stored meanwhile wakes the subscription; else waiting would be forever.
            bound = _STATUS_LAG if timeout is None else min(timeout, _STATUS_LAG)
            try:
                found = await _wait_pushed(broker, job_id, sub, bound, pushed, queued_seq=queued_seq)
            except JobNotFinishedError:
                raise result_gone_error(job_id, status) from None
        else:
            found = await _wait_pushed(broker, job_id, sub, timeout, pushed, held=rec, queued_seq=queued_seq)
        return await payloads.load_result(broker, found)
    finally:
        await sub.unsubscribe()


def check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    """A wait's ``timeout`` as seconds >= 0, or None for no bound (``inf`` too); a ValueError naming
    ``what`` for anything else (a string, NaN, a negative number, a bool)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0:
        raise ValueError(f"{what} must be seconds >= 0 or None (wait forever), not {timeout!r}")
    return None if timeout == float("inf") else float(timeout)


async def _unfinished_once(broker: "Broker", job_id: str, queued_seq: int | None) -> ResultRecord:
    """A single check found no result: why (unknown id, result gone, or not finished), or the
    result after all when the status says it ended just after the read."""
    record = await _status_record(broker, job_id)
    if _schedule_run(job_id, record) is not None:
        return await _schedule_result(broker, job_id, record, 0)
    status = _status_in(record)
    if status is None and not await _still_queued(broker, job_id, queued_seq):
        raise JobNotFoundError(f"no job with id {job_id!r} (never enqueued, or its records expired)")
    if status in TERMINAL_VALUES:  # read again: its result may have been stored just after our read
        rec = await get_result(broker, job_id)
        if rec is None:
            raise result_gone_error(job_id, status)
        return await payloads.load_result(broker, rec)
    raise JobNotFinishedError(f"job {job_id} has not finished yet")


async def _still_queued(broker: "Broker", job_id: str, seq: int | None) -> bool:
    """For a job read with neither status nor result: whether its message at ``seq`` is still in the
    jobs stream (None: not known, so no), or, gone, because it just ended (its records are there
    now: read after the message, which a worker acks last)."""
    if seq is None:
        return False
    try:
        await broker.js.get_msg(broker.layout.jobs_stream, seq)
        return True
    except NotFoundError:
        rec, status = await asyncio.gather(get_result(broker, job_id), _status_of(broker, job_id))
        return rec is not None or status is not None


async def unrecorded_status(broker: "Broker", job_id: str, seq: int) -> StatusRecord | None:
    """The record a job stored without its ``queued`` record stands for (``queued``, or ``waiting``
    with dependencies), read from its message at ``seq`` while that is still in the jobs stream;
    None once it is not (taken and ended, or purged)."""
    try:
        msg = await broker.js.get_msg(broker.layout.jobs_stream, seq)
        meta = decode_meta(msg.headers)
    except (NotFoundError, SerializationError):
        return None
    if meta.job_id != job_id:
        return None
    return meta_first_record(meta, initial_status(meta.options.depends_on))


def result_gone_error(job_id: str, status: str) -> JobNotFoundError:
    """The error for a job whose status says it ended but whose result is no longer stored."""
    return JobNotFoundError(
        f"job {job_id} {status}, but its result is gone (kept for its result_ttl, then expired; or deleted)"
    )


def _pushed_record(broker: "Broker", job_id: str, data: bytes) -> ResultRecord | None:
    """A record a worker pushed, checked as a read one is; None if it is not one to trust."""
    try:
        rec = decode_result(broker.settings, job_id, data)
        if isinstance(rec.refused, SignatureError):
            raise rec.refused
    except SerializationError as exc:  # not a record this job's worker sealed: the bucket decides
        log.warning("job %s: ignoring a pushed result: %s", job_id, exc)
        return None
    return None if rec.expired else rec


# After a push whose record is not (yet) readable: the stream may not have stored it yet, or it
# refused it (a create-only result write after a result exists, a forged publish). Look again later.
_RECHECKS = (0.05, 0.25, 1.0, 3.0)
# Reads while nothing was pushed (seconds after the previous one; the last repeats).
_SAFETY_READS = (0.25, 1.0, 3.0, 10.0)
# A read waiting for its push holds no subscription for this long (most jobs are done by then).
_PUSH_ONLY = 0.5
# A result read back while the job's status record still says it runs: the worker's status write
# (another stream) is still in flight. Waited for this long at most, then the result is returned.
_STATUS_LAG = 1.0
# A result that finished longer ago than this (by its record) has its status stored: not checked.
_FRESH = 5.0


async def _status_or_unknown(broker: "Broker", job_id: str) -> str | None:
    """:func:`_status_of`, or "" (unknown) when the read fails: the result beside it was read."""
    try:
        return await _status_of(broker, job_id)
    except (asyncio.TimeoutError, nats.errors.Error, OSError) as exc:
        log.debug("job %s: status not read with its result (%s); returning the result", job_id, exc)
        return ""


def _ended(status: str | None) -> bool:
    """A result read back may be returned beside this status: ended, or none / unknown. Not while it
    still says the job runs (read in the gap between the worker's result write and its status write)."""
    return not status or status in TERMINAL_VALUES


def _long_done(rec: ResultRecord) -> bool:
    """Finished over :data:`_FRESH` seconds ago (by its record): its status write is stored by now."""
    finished = rec.meta.get("finished_at")
    return isinstance(finished, (int, float)) and time.time() - finished > _FRESH


class _ReadBacks:
    """One wait's reads of the bucket: its ``found`` future, the rechecks it scheduled, and the
    push (if any) it takes. :meth:`close` cancels what is left."""

    def __init__(
        self,
        broker: "Broker",
        job_id: str,
        pushed: "asyncio.Future[bytes] | None",
        held: ResultRecord | None,
        queued_seq: int | None = None,
    ) -> None:
        self.broker, self.job_id, self.pushed, self.queued_seq = broker, job_id, pushed, queued_seq
        self.loop = asyncio.get_running_loop()
        self.found: asyncio.Future = self.loop.create_future()
        self._timers: list[asyncio.TimerHandle] = []
        self._checks: set[asyncio.Task] = set()
        self._lag_until: float | None = None
        self.held = held  # stored, its status not final yet: returned at the deadline
        if pushed is not None:
            pushed.add_done_callback(self._take_push)
        broker.on_reconnect(self.recheck)
        broker.on_close(self._closed)

    async def read(self) -> ResultRecord | None:
        """The stored result, once the job's status record is final too (or after the lag)."""
        broker, job_id = self.broker, self.job_id
        # After a reconnect to a server that came back without its store, the buckets are made again
        # here: else every read fails with "no responders" until the timeout.
        if not broker.layout_ready:
            await broker.ensure_layout()
        rec, status = await asyncio.gather(get_result(broker, job_id), _status_or_unknown(broker, job_id))
        # Expired or deleted while it was waited for (unless it waits in its queue without its record):
        if rec is None and status is None and not await _still_queued(broker, job_id, self.queued_seq):
            raise JobNotFoundError(
                f"no job with id {job_id!r} (its records expired or were deleted, or the server came back "
                "without its store)"
            )
        if rec is None or _ended(status):
            return rec
        self.held = rec
        if self._lag_until is None:
            self._lag_until = self.loop.time() + _STATUS_LAG
        return rec if self.loop.time() >= self._lag_until else None

    async def recheck(self) -> None:
        try:
            rec = await self.read()
        except JobNotFoundError as exc:
            if not self.found.done():
                self.found.set_exception(exc)
            return
        except (asyncio.TimeoutError, nats.errors.Error, OSError, SerializationError, NaqConnectionError) as exc:
            log.debug("job %s: a recheck of the result failed (%s); the wait goes on", self.job_id, exc)
            return
        if rec is not None and not self.found.done():
            self.found.set_result(rec)

    def spawn_recheck(self) -> None:
        task = asyncio.ensure_future(self.recheck())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def recheck_later(self, delays: tuple[float, ...] | None = None) -> None:
        self._timers += [self.loop.call_later(d, self.spawn_recheck) for d in delays or _RECHECKS]

    def _take_push(self, fut: "asyncio.Future[bytes]") -> None:
        if fut.cancelled() or self.found.done():
            return
        if not fut.result():  # stored, too big to push (runner.PUSH_LIMIT): read it now
            self.spawn_recheck()
            return
        rec = _pushed_record(self.broker, self.job_id, fut.result())
        if rec is not None:
            self.found.set_result(rec)

    async def _closed(self) -> None:
        """The connection is being closed (its client was): nothing can wake this wait any more."""
        if not self.found.done():
            self.found.set_exception(
                NaqConnectionError(
                    f"the connection closed while waiting for the result of job {self.job_id} (its client "
                    "was closed); the job itself goes on: read its result again on an open client"
                )
            )

    def close(self) -> None:
        if self.pushed is not None:
            self.pushed.remove_done_callback(self._take_push)
        self.broker.off_reconnect(self.recheck)
        self.broker.off_close(self._closed)
        for t in self._timers:
            t.cancel()
        for task in list(self._checks):
            task.cancel()


async def _wait_pushed(
    broker: "Broker",
    job_id: str,
    sub: Any,
    timeout: float | None,
    pushed: "asyncio.Future[bytes] | None",
    *,
    held: ResultRecord | None = None,
    quiet_for: float = 0.0,
    queued_seq: int | None = None,
) -> ResultRecord:
    """The result once stored. A put on ``sub`` only wakes the wait: the value returned is always the
    one read back from the bucket, so a value the server refused is never returned. The put reaches
    ``sub`` as the worker sends it, before its status write is stored: a result read back then is
    returned once the status is final too (or after :data:`_STATUS_LAG`), as a pushed one is (the
    worker pushes once both are stored). After a reconnect (puts made meanwhile are lost) it reads
    once too. ``held``: a result read before, whose status was not final yet.

    ``sub`` None: a job marked for a push to this client. For ``quiet_for`` seconds the wait then
    subscribes to nothing and reads nothing (the push ends most such waits; a SUB and an UNSUB
    per job would cost the caller two writes and the server two interest changes). Then it
    subscribes and reads once, as any read does, so a push lost on a reconnect, a worker too old
    to push, or a forged push that took the waiter's place cost at most ``quiet_for``."""
    reads = _ReadBacks(broker, job_id, pushed, held, queued_seq)
    watch = _ResultWatch(broker, job_id, sub, reads, quiet_for)
    deadline = None if timeout is None else reads.loop.time() + timeout
    try:
        while True:
            now = reads.loop.time()
            if deadline is not None and now >= deadline:
                if reads.held is not None:  # stored; only its status write lags
                    return reads.held
                raise JobNotFinishedError(f"job {job_id} did not finish within {timeout:g}s")
            await watch.open_if_due(now)
            until = watch.next_read if deadline is None else min(deadline, watch.next_read)
            done, _ = await asyncio.wait(
                watch.waitables(), timeout=max(0.0, until - now), return_when=asyncio.FIRST_COMPLETED
            )
            if reads.found in done:
                return reads.found.result()
            if not done:
                watch.on_quiet()
            elif (rec := await watch.on_put()) is not None:
                return rec
    finally:
        reads.close()
        await watch.close()


class _ResultWatch:
    """A wait's subscription to its job's result key (given, or opened once the quiet window is
    over), the ``next_msg`` pending on it, and when to read the bucket again as a safety net."""

    def __init__(self, broker: "Broker", job_id: str, sub: Any, reads: _ReadBacks, quiet_for: float) -> None:
        self.broker, self.job_id, self.sub, self.reads = broker, job_id, sub, reads
        self.own_sub: Any = None
        self.nxt: asyncio.Future | None = None
        self._pauses = iter(_SAFETY_READS)
        self.next_read = reads.loop.time() + (quiet_for if sub is None else next(self._pauses))

    async def open_if_due(self, now: float) -> None:
        if self.sub is None and now >= self.next_read:  # the quiet window is over
            lay = self.broker.layout
            self.sub = self.own_sub = await self.broker.nc.subscribe(lay.kv_subject(lay.results_bucket, self.job_id))
            self.reads.spawn_recheck()  # a put made before the subscription (failing reads are retried)
            self.next_read = now + next(self._pauses)
        if self.sub is not None and (self.nxt is None or self.nxt.done()):
            self.nxt = asyncio.ensure_future(self.sub.next_msg(timeout=None))

    def waitables(self) -> set[asyncio.Future]:
        return {f for f in (self.nxt, self.reads.found) if f is not None}

    def on_quiet(self) -> None:
        """Nothing came: at the next read's time, read the bucket. A put routed before our
        subscription existed but stored after our read never wakes us (rare): this is the net."""
        now = self.reads.loop.time()
        if self.sub is not None and now >= self.next_read:
            self.reads.spawn_recheck()
            self.next_read = now + next(self._pauses, _SAFETY_READS[-1])

    async def on_put(self) -> ResultRecord | None:
        """A put woke the wait: the record read back, once its status is final (else None)."""
        assert self.nxt is not None
        msg = self.nxt.result()
        op = (msg.headers or {}).get(KV_OP)
        if op in (KV_DEL, KV_PURGE) or not msg.data:
            return None  # a requeue cleared the old result; wait for the new one
        rec = await self.reads.read()
        if rec is None:
            self.reads.recheck_later()
        return rec

    async def close(self) -> None:
        if self.nxt is not None and not self.nxt.done():
            self.nxt.cancel()
        if self.own_sub is not None:
            with contextlib.suppress(nats.errors.Error):  # (closed meanwhile: it went with the connection)
                await self.own_sub.unsubscribe()
