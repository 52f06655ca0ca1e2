"""Dependencies: a job runs only after every job it depends on has succeeded.

A delivered job whose dependencies have not all ended is *parked*, apart from
its queue (as RQ's deferred registry keeps deferred jobs apart): its status is
set to ``waiting``, its message is copied to the waiting stream under the
subject of one dependency it still awaits (``<prefix>.waiting.<dep id>``), and
the original is acked. A parked job so holds no slot, no pull credit and no
ack-pending room: unrelated jobs on its queue run as if it were not there.

When a job reaches a terminal state, :func:`release_dependents` settles every
copy parked on it: re-published to its queue (``Nats-Msg-Id`` =
``rel-<job>-<copy seq>``, so a repeated release is dropped), parked again on
the next dependency it still awaits, or failed with a reason naming the
dependency that failed, was cancelled or does not exist (and its own dependents
after it). A copy is deleted only once that is done, so a worker killed
mid-release loses nothing: the release runs again (a parked job re-checks its
dependency right after parking; every worker sweeps the waiting stream at start
and every :data:`SWEEP_INTERVAL` seconds) and each step is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

import nats.errors
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from . import payloads
from .envelope import HEADER_META, HEADER_MSG_ID, HEADER_SIG, JobMeta, decode_meta, header_size, meta_first_record
from .errors import (
    JS_MESSAGE_GONE,
    JS_WRONG_LAST_SEQUENCE,
    DependencyFailedError,
    NaqConnectionError,
    SerializationError,
    SignatureError,
)
from .job import JobStatus
from .layout import create_only
from .queued import delete_message
from .records import encode_failure, exception_type_names
from .results import get_result, push_result
from .serialization import pack_record, seal_record, verify_job
from .status import (
    STATUS_VALUES,
    TERMINAL_VALUES,
    StatusRecord,
    decode_status,
    encode_status,
    with_status,
)

if TYPE_CHECKING:
    from .broker import Broker
    from .delivery import Delivery
    from .job import Job

__all__ = [
    "DependencyGate",
    "release_dependents",
    "settle_dependents",
    "sweep_waiting",
    "parked_deps",
    "dependency_cycle",
    "SWEEP_INTERVAL",
]

log = logging.getLogger("naq_nb.worker")

SWEEP_INTERVAL = 30.0
_BAD = {JobStatus.FAILED.value: "failed", JobStatus.CANCELLED.value: "was cancelled"}
_ENDED = TERMINAL_VALUES
_MISSING = "does not exist (never enqueued, or expired)"
_DAMAGED = "?damaged"  # _status_of's answer for a record that is there but unreadable or names no status
_DAMAGED_WHY = "has a damaged status record (not a job status naq_nb wrote)"
_UNPROVEN = "?unproven"  # _status_of's answer, with signing on, for "succeeded" that no sealed result backs
_UNPROVEN_WHY = (
    "says it succeeded, but no result sealed by a known key backs that (a status record written by hand, "
    "or its result expired: NAQ_RESULT_TTL)"
)
# A dependency's first record and its dependent's message go to different streams, which the server
# stores independently: the dependent can arrive before that record does. Look again before failing.
MISSING_GRACE = (0.05, 0.25, 1.0)
_CHUNK = 64  # copies settled concurrently
_INDEX_MAX = 200_000  # job ids kept in a gate's index of parked-on jobs before it starts afresh


def _verdict(deps: list[str], statuses: list[str | None]) -> tuple[str, str, str]:
    """``("fail", dep, why)``, ``("wait", dep, "")`` or ``("ready", "", "")``."""
    waiting = ""
    for dep, st in zip(deps, statuses):
        if st is None:
            return "fail", dep, _MISSING
        if st == _DAMAGED:  # it will never end: waiting on it would be for ever
            return "fail", dep, _DAMAGED_WHY
        if st == _UNPROVEN:
            return "fail", dep, _UNPROVEN_WHY
        if st in _BAD:
            return "fail", dep, _BAD[st]
        if st != JobStatus.SUCCEEDED.value and not waiting:
            waiting = dep
    return ("wait", waiting, "") if waiting else ("ready", "", "")


async def _stored_status(b: "Broker", job_id: str) -> Any:
    """The job's status bucket entry, or None when it has none."""
    kv = await b.kv(b.layout.status_bucket)
    try:
        return await kv.get(job_id)
    except KeyNotFoundError:
        return None


async def _status_entry(b: "Broker", job_id: str) -> tuple[StatusRecord | None, int]:
    entry = await _stored_status(b, job_id)
    if entry is None:
        return None, 0
    try:
        return (decode_status(entry.value) if entry.value else None), entry.revision or 0
    except SerializationError:
        return None, entry.revision or 0


async def _status_of(b: "Broker", job_id: str) -> str | None:
    """The job's status; None if it has no record, :data:`_DAMAGED` if its record is unreadable or
    names no status (forged, damaged): a dependent then fails naming it, never waits for ever."""
    entry = await _stored_status(b, job_id)
    if entry is None or not entry.value:
        return None
    try:
        st = decode_status(entry.value).get("status")
    except SerializationError:
        return _DAMAGED
    if not isinstance(st, str) or st not in STATUS_VALUES:
        return _DAMAGED
    if st == JobStatus.SUCCEEDED.value and b.settings.signing_keys:
        return await _proven_success(b, job_id)
    return st


async def _proven_success(b: "Broker", job_id: str) -> str:
    """With signing on, "succeeded" counts only when the job's sealed result says so too: status
    records are not signed, and one written by hand must not start the jobs waiting on it."""
    rec = await get_result(b, job_id)
    return JobStatus.SUCCEEDED.value if rec is not None and rec.ok else _UNPROVEN


async def unverified(b: "Broker", meta: JobMeta, headers: dict | None, data: bytes | None) -> str | None:
    """With signing on, why a job message is not to be trusted (its signature, as the runner checks it),
    else None. Checked before a dependency step writes anything under the id its header names: an
    unsigned message must not park, release or fail a real job. A body that cannot be fetched is left
    to the run, which fails it naming why."""
    keys = b.settings.signing_keys
    if not keys:
        return None
    hdrs = headers or {}
    try:
        body = await payloads.open_body(b, data or b"", f"job {meta.job_id}")
        verify_job(keys, meta.job_id, hdrs.get(HEADER_META, ""), body, hdrs.get(HEADER_SIG))
    except SignatureError as exc:
        return str(exc)
    except SerializationError:
        pass
    return None


def _job_headers(headers: dict | None) -> dict:
    """The job's own headers (meta, signature...), without NATS's."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith("Nats-")}


async def park(b: "Broker", headers: dict | None, body: bytes, job_id: str, dep: str, origin: str) -> None:
    """Copy a job message to the waiting stream under ``dep``. ``origin`` names the message parked (its
    stream and sequence): the same message parked again is de-duplicated, but a job requeued since (a new
    message) is parked anew, not dropped as a repeat within the de-duplication window."""
    hdrs = {**_job_headers(headers), HEADER_MSG_ID: f"park-{job_id}-{dep}-{origin}"}
    # Its message id is longer than the one it came with: a message near max_payload (hand-made; a
    # client keeps 1 KiB free) would go over, and the server would close the worker's connection.
    body = await payloads.fit_body(b, body or b"", job_id, _HEADER_LINE + header_size(hdrs))
    await b.publish(b.layout.waiting_subject(dep), body, headers=hdrs, what=f"job {job_id} parked on job {dep}")


_HEADER_LINE = 16  # the "NATS/1.0" line and blank line around a message's headers


class DependencyGate:
    """Admits delivered jobs that have dependencies: run now, fail, or park them apart.

    It also keeps :attr:`parked_on`, the ids of jobs that have (or had) copies parked on them,
    so a finished job with no dependent costs no stream read (:meth:`may_have_dependents`):
    filled from the waiting stream's subjects at :meth:`start`, kept current by a subscription
    to every park and refreshed by each sweep. A park this worker has not seen yet when the
    job it waits on finishes is still released: the parked job re-checks its dependency right
    after parking, and the sweep settles whatever both missed.

    ``parked``, :meth:`take` and :meth:`deliveries` remain for the worker: nothing is held in
    memory any more (parked jobs live in the waiting stream), so they are always empty.
    """

    def __init__(
        self,
        broker: "Broker",
        on_ready: Callable[["Delivery"], None],
        on_failed: Callable[["Delivery", str, str], Awaitable[None]],
        sweep_interval: float = SWEEP_INTERVAL,
        on_refused: Callable[[Any, str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.b = broker
        self.on_ready = on_ready
        self.on_failed = on_failed
        self.on_refused = on_refused  # (msg, queue, why): a message whose signature fails (signing on)
        self.parked: dict[str, Any] = {}
        self.parked_on: set[str] = set()
        self._indexed = False  # until start() has read the waiting stream, every job may have dependents
        self._sub: Any = None
        self._sweeper = asyncio.ensure_future(self._sweep_loop(sweep_interval))

    async def start(self) -> None:
        """Subscribe to parks, then index what is parked already (in that order: none slips between)."""
        self._sub = await self.b.nc.subscribe(self.b.layout.waiting_subject("*"), cb=self._on_park)
        await self.reindex()

    async def reindex(self) -> None:
        """Add every job with parked copies to :attr:`parked_on` (after a reconnect: parks were missed)."""
        self._indexed = False
        deps = await parked_deps(self.b)
        if len(self.parked_on) + len(deps) > _INDEX_MAX:  # stale entries of jobs released elsewhere
            self.parked_on.clear()
        self.parked_on |= deps
        self._indexed = True

    async def _on_park(self, msg: Any) -> None:
        self.parked_on.add(msg.subject.rsplit(".", 1)[-1])

    def may_have_dependents(self, job_id: str) -> bool:
        """False only if no job is known to be parked on ``job_id`` (see the class docs for the race)."""
        return not self._indexed or job_id in self.parked_on

    def released(self, job_id: str) -> None:
        """``job_id``'s dependents were settled: forget it."""
        self.parked_on.discard(job_id)

    async def admit(self, d: "Delivery") -> None:
        """Run ``d`` now, fail it, or park it until its dependencies end (with signing on, one whose
        signature fails goes to ``on_refused`` first: nothing is written under the id it names)."""
        meta = d.meta
        why_not = await unverified(self.b, meta, d.msg.headers, d.msg.data)
        if why_not is not None and self.on_refused is not None:
            await self.on_refused(d.msg, meta.queue, why_not)
            return
        kind, dep, why = await _check_deps(self.b, list(meta.options.depends_on), d.msg.in_progress)
        if kind == "fail":
            await self.on_failed(d, dep, why)
            return
        if kind == "ready":
            self.on_ready(d)
            return
        if await _mark_waiting(self.b, meta, dep):
            self.parked_on.add(dep)
            await park(self.b, d.msg.headers, d.msg.data, meta.job_id, dep, f"q{d.seq}")
        await d.msg.ack()
        # The dependency may have ended between the check above and the park: settle it now.
        if await _status_of(self.b, dep) in _ENDED:
            await release_dependents(self.b, dep)

    def take(self, jid: str) -> "Delivery | None":
        """Nothing is parked in memory: a waiting job is cancelled through its status record."""
        return None

    def deliveries(self) -> list["Delivery"]:
        return []

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            try:
                await sweep_waiting(self.b)
                if self._sub is not None:
                    await self.reindex()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnecting: the next sweep catches up
                log.warning("sweep of waiting jobs failed: %s", exc)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        self._sweeper.cancel()
        await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error as exc:  # closed or reconnecting: the subscription goes with it
                log.debug("cannot unsubscribe from parks: %s", exc)


async def _check_deps(
    b: "Broker", deps: list[str], still_working: Callable[[], Awaitable[None]]
) -> tuple[str, str, str]:
    """:func:`_verdict` on the dependencies' statuses, read again after each :data:`MISSING_GRACE`
    pause while one of them has no record yet (``still_working()`` before each pause: the message
    must not be redelivered meanwhile, however short its ack wait)."""

    async def verdict() -> tuple[str, str, str]:
        return _verdict(deps, list(await asyncio.gather(*(_status_of(b, x) for x in deps))))

    for pause in MISSING_GRACE:
        found = await verdict()
        if found[2] not in (_MISSING, _UNPROVEN_WHY):  # (a result is stored apart from its status too)
            return found
        await still_working()
        await asyncio.sleep(pause)
    return await verdict()


async def _mark_waiting(b: "Broker", meta: JobMeta, dep: str) -> bool:
    """Status ``waiting`` (on ``dep``) unless the job already ended (cancelled while queued): False then."""
    kv = await b.kv(b.layout.status_bucket)
    for _ in range(5):
        rec, rev = await _status_entry(b, meta.job_id)
        if rec is not None and rec.get("status") in _ENDED:
            return False
        base = rec or meta_first_record(meta, JobStatus.WAITING)
        new = encode_status(with_status(base, JobStatus.WAITING, waiting_on=dep))
        try:
            await (kv.update(meta.job_id, new, last=rev) if rev else kv.create(meta.job_id, new))
            return True
        except KeyWrongLastSequenceError:
            continue  # changed meanwhile (cancelled?): look again
    return True


async def settle_dependents(b: "Broker", job_id: str, what: str) -> None:
    """:func:`release_dependents` of ``job_id``, which ``what`` ended ("cancelled", "finished"),
    outside a worker: best effort, as that ending is done either way; the workers' sweep of the
    waiting stream finishes what fails here."""
    try:
        await release_dependents(b, job_id)
    except (NaqConnectionError, APIError, TimeoutError) as exc:
        log.warning("job %s %s; settling what waits on it is left to the sweep: %s", job_id, what, exc)


async def settle_dependents_of(b: "Broker", job_ids: list[str], what: str) -> None:
    """:func:`settle_dependents` of those of ``job_ids`` (ended by ``what``) that jobs wait on, as one
    read of the waiting stream's subjects tells: a look per job was one request each (100,000 for a
    purge of 100,000). A later park re-checks its dependency, so none is missed."""
    try:
        parked = await parked_deps(b)
    except (NaqConnectionError, APIError, TimeoutError, nats.errors.Error) as exc:
        log.warning("%d jobs %s; settling what waits on them is left to the sweep: %s", len(job_ids), what, exc)
        return
    for jid in job_ids:
        if jid in parked:
            await settle_dependents(b, jid, what)


async def release_dependents(b: "Broker", job_id: str, *, gone_too: bool = False) -> int:
    """Settle every job parked on ``job_id`` if it has ended (or its record is damaged; with
    ``gone_too``, also if it has none: the sweep's case, long after it was parked); returns how
    many copies were settled.

    Idempotent and safe to run concurrently (hook, re-check, sweep). Costs one stream read when
    nothing waits on the job.
    """
    todo, settled, rounds = [job_id], 0, 0
    while todo and rounds < 10_000:
        rounds += 1
        dep = todo.pop()
        status: str | None = None
        async for chunk in _copies(b, dep):
            if status is None:
                status = await _status_of(b, dep) or ""
                if not _settles(status, gone_too):
                    break  # still running (an early sweep, or a parked job's re-check): nothing to do
            nxt = await asyncio.gather(*(_settle(b, raw) for raw in chunk))
            settled += len(chunk)
            todo += [x for x in nxt if x]
    return settled


async def _copies(b: "Broker", dep: str) -> AsyncIterator[list[api.RawStreamMsg]]:
    """The copies parked on ``dep``, in chunks, read forward by sequence (settled ones get deleted)."""
    lay = b.layout
    seq, chunk = 1, []
    while True:
        try:
            raw = await b.js.get_msg(lay.waiting_stream, seq=seq, subject=lay.waiting_subject(dep), next=True)
        except APIError as exc:
            if not _gone(exc):
                raise
            break
        assert raw.seq is not None  # a stored message always has its sequence
        chunk.append(raw)
        seq = raw.seq + 1
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _settle(b: "Broker", raw: api.RawStreamMsg) -> str | None:
    """Release, re-park or fail one parked copy, then delete it. Returns a job id to release next."""
    assert raw.seq is not None  # a stored message always has its sequence
    try:
        meta = decode_meta(raw.headers)
    except SerializationError as exc:
        log.warning("dropping an undecodable parked message (seq %s): %s", raw.seq, exc)
        await _delete_copy(b, raw.seq)
        return None
    why_not = await unverified(b, meta, raw.headers, raw.data)
    if why_not is not None:  # published there by hand: the job it names is not touched
        log.warning("dropping a parked message of job %s (seq %s): %s", meta.job_id, raw.seq, why_not)
        await _delete_copy(b, raw.seq)
        return None
    jid = meta.job_id
    own, rev = await _status_entry(b, jid)
    nxt = None
    if own is not None and own.get("status") == JobStatus.WAITING.value:
        deps = list(meta.options.depends_on)
        kind, dep, why = _verdict(deps, list(await asyncio.gather(*(_status_of(b, x) for x in deps))))
        if kind == "fail":
            await _fail_parked(b, raw, meta, own, rev, dep, why)
            nxt = jid  # its own dependents fail next
        elif kind == "wait":
            await _repark(b, raw, meta, own, rev, dep)
            nxt = dep  # in case it ended meanwhile
        else:
            await _release(b, raw, meta, own, rev)
    # else: released before (a repeated copy), cancelled, or expired: only the copy goes
    await _delete_copy(b, raw.seq)
    return nxt


async def _repark(b: "Broker", raw: api.RawStreamMsg, meta: JobMeta, own: StatusRecord, rev: int, dep: str) -> None:
    """Park the copy again on ``dep``, the next dependency it waits on, and say so in its status (which
    renews that record too: it must outlive the wait, or the release would find no job to release)."""
    await park(b, raw.headers, raw.data or b"", meta.job_id, dep, f"w{raw.seq}")
    kv = await b.kv(b.layout.status_bucket)
    try:
        await kv.update(meta.job_id, encode_status(with_status(own, JobStatus.WAITING, waiting_on=dep)), last=rev)
    except KeyWrongLastSequenceError:
        pass  # moved on meanwhile (cancelled, or another release got here first)


async def _release(b: "Broker", raw: api.RawStreamMsg, meta: JobMeta, own: StatusRecord, rev: int) -> None:
    lay = b.layout
    hdrs = {**_job_headers(raw.headers), HEADER_MSG_ID: f"rel-{meta.job_id}-{raw.seq}"}
    await b.publish(
        lay.queue_subject(meta.queue), raw.data or b"", headers=hdrs, what=f"job {meta.job_id} released to its queue"
    )
    kv = await b.kv(lay.status_bucket)
    try:
        await kv.update(meta.job_id, encode_status(with_status(own, JobStatus.QUEUED, drop=["waiting_on"])), last=rev)
    except KeyWrongLastSequenceError:
        pass  # moved on meanwhile (a worker already runs it, or another release got here first)


async def _fail_parked(
    b: "Broker", raw: api.RawStreamMsg, meta: JobMeta, own: StatusRecord, rev: int, dep: str, why: str
) -> None:
    """Dead-letter a parked job whose dependency failed: failed entry, result (create-only), then status
    over the ``waiting`` record read (``own``, at revision ``rev``). The status goes last: a release cut
    short before it finds the job still waiting and does it all again (each step is idempotent)."""
    lay, jid = b.layout, meta.job_id
    exc = DependencyFailedError(f"job {jid} depends on job {dep}, which {why}")
    exc.dependency = dep  # type: ignore[attr-defined]
    error = f"{type(exc).__name__}: {exc}"
    now = time.time()
    info = {
        "reason": error,
        "failed_at": now,
        "worker": None,
        "original_headers": _job_headers(raw.headers),
        "attempts": 0,
        "failures": 1,
        "exc_type": exception_type_names(exc)[0],
    }
    hdrs = {**_job_headers(raw.headers), HEADER_MSG_ID: f"depfail-{jid}-{raw.seq}", "Naq-Reason": error[:500]}
    head = pack_record(info, b"")
    # A body that fit its job's message may not fit beside this record: it moves to the object store (as
    # a worker's dead letter's does), or the server would refuse the message and close the connection.
    extra = len(head) + 2 * (_HEADER_LINE + header_size(hdrs) + 600)
    body = await payloads.fit_body(b, raw.data or b"", jid, extra)
    await b.publish(lay.failed_subject(meta.queue), head + body, headers=hdrs, what=f"the failed entry of job {jid}")
    data = encode_failure(
        b.serializer,
        exc,
        error=error,
        tb="",
        result_ttl=meta.options.result_ttl,
        attempts=0,
        failures=1,
        dependency=dep,
    )
    data = seal_record(data, jid, b.settings.signing_key)  # with signing on, an unsealed result is refused
    try:
        await b.publish(
            lay.kv_subject(lay.results_bucket, jid), data, headers=create_only(), what=f"the result of job {jid}"
        )
    except APIError as err:
        if err.err_code != JS_WRONG_LAST_SEQUENCE:
            raise  # a result already exists (a repeated release, a cancel): it stands
    fields = {"error": error, "finished_at": now, "failures": 1, "dependency": dep}
    rec = with_status(own, JobStatus.FAILED, drop=["waiting_on"], **fields)
    try:
        await (await b.kv(lay.status_bucket)).update(jid, encode_status(rec), last=rev)
    except KeyWrongLastSequenceError:
        pass  # moved on meanwhile (cancelled): that record stands beside the result that stood
    if meta.reply:  # the client that enqueued it may be waiting: read it now
        await push_result(b, meta.reply, jid)


async def _delete_copy(b: "Broker", seq: int) -> None:
    await delete_message(b, b.layout.waiting_stream, seq)  # (gone: another release deleted it first)


def _gone(exc: APIError) -> bool:
    """The message is no longer there (see :data:`~naq_nb.core.errors.JS_MESSAGE_GONE`)."""
    return isinstance(exc, NotFoundError) or exc.err_code in JS_MESSAGE_GONE


async def parked_deps(b: "Broker") -> set[str]:
    """The ids of the jobs that have copies parked on them now."""
    lay = b.layout
    info = await b.js.stream_info(lay.waiting_stream, subjects_filter=lay.waiting_subject("*"))
    return {subject.rsplit(".", 1)[-1] for subject in (info.state.subjects or {})}


async def sweep_waiting(b: "Broker") -> int:
    """Release what waits on jobs that have ended (after a worker died mid-release); returns copies settled."""
    await b.ensure_layout()
    settled = 0
    for dep in await parked_deps(b):
        # Gone or damaged too: a job parked on one whose record expired or was overwritten by hand
        # would otherwise wait for ever. One bad dependency must not stop the sweep of the others.
        try:
            if _settles(await _status_of(b, dep) or "", gone_too=True):
                settled += await release_dependents(b, dep, gone_too=True)
        except (SerializationError, TypeError, ValueError) as exc:
            log.warning("sweep: the jobs waiting on %s are left for now: %s", dep, exc)
    return settled


def _settles(status: str, gone_too: bool) -> bool:
    """Jobs parked on a dependency with this status ("" for none) can be settled now."""
    return status in _ENDED or status == _DAMAGED or (gone_too and status == "")


async def dependency_cycle(b: "Broker", jobs: list["Job"], limit: int = 1000) -> list[str] | None:
    """A chain of ids from one of ``jobs`` back to itself through dependencies (``[a, b, a]``), read
    from ``jobs`` and the stored status records (at most ``limit`` a job); None if there is none.
    Only a chosen ``job_id`` can close a cycle: a new job's id is not known before it is made."""
    starts = [j.job_id for j in jobs if j.options.job_id and j.options.depends_on]
    if not starts:
        return None
    known: dict[str, list[str]] = {j.job_id: list(j.options.depends_on) for j in jobs}
    kv = await b.kv(b.layout.status_bucket)

    async def deps_of(jid: str) -> list[str]:
        if jid not in known:
            try:
                found = decode_status((await kv.get(jid)).value or b"").get("depends_on")
            except (KeyNotFoundError, SerializationError):
                found = None  # not stored (yet): nothing known to lead back
            known[jid] = [d for d in found if isinstance(d, str)] if isinstance(found, list) else []
        return known[jid]

    for start in starts:
        chain = await _cycle_from(start, deps_of, limit)
        if chain:
            return chain
    return None


async def _cycle_from(start: str, deps_of: Callable[[str], Awaitable[list[str]]], limit: int) -> list[str] | None:
    """Breadth first from ``start`` through dependencies: the chain back to ``start``, if one leads there."""
    parent = {start: start}
    frontier = [start]
    while frontier and len(parent) < limit:
        following = []
        for jid in frontier:
            for dep in await deps_of(jid):
                if dep == start:
                    return _chain(parent, jid, start)
                if dep not in parent:
                    parent[dep] = jid
                    following.append(dep)
        frontier = following
    return None


def _chain(parent: dict[str, str], last: str, start: str) -> list[str]:
    """``start`` ... ``last``, then ``start`` again, from the breadth-first search's parents."""
    chain = [last]
    while chain[-1] != start:
        chain.append(parent[chain[-1]])
    return [*reversed(chain), start]
