"""The failed-jobs stream: list jobs that ran out of retries (or could not be decoded), requeue them.

A failed entry keeps the original job headers and body, so a requeue republishes
exactly what was enqueued; its result and status are reset so waiters see the
new run.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Iterable, TypedDict

from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from . import payloads
from .broker import Broker
from .oneshot import stream_messages
from .envelope import HEADER_META, HEADER_MSG_ID, JobMeta, decode_meta, header_meta
from .errors import JS_MESSAGE_GONE, ConcurrentUpdateError, JobNotFoundError, SerializationError
from .job import JobStatus
from .layout import WIRE_ID_RE
from .status import StatusRecord, decode_status, encode_status, first_record, record_time, text_or_none as _text
from .serialization import unpack_record

__all__ = ["FailedEntry", "FailedFinder", "count_failed", "list_failed", "requeueable_seqs", "requeue_failed"]


class FailedEntry(TypedDict):
    """One entry of the failed stream as :func:`list_failed` reports it."""

    seq: int  # its sequence in the failed stream (a requeue reference)
    job_id: str | None  # None: a malformed message (no Naq-Meta header)
    queue: str
    func: str | None
    reason: str | None  # why it was dead-lettered
    error: str | None  # the same text as ``reason``
    traceback: str
    attempts: int | None
    failures: int | None
    worker: str | None
    failed_at: float | None
    exc_type: str | None
    requeueable: bool  # it carries its original job headers


async def _iter_failed(broker: Broker, queue: str | None, limit: int) -> AsyncIterator[api.RawStreamMsg]:
    lay = broker.layout
    await broker.ensure_layout()
    info = await broker.js.stream_info(lay.failed_stream)
    subject = lay.failed_subject(queue) if queue else None
    found = 0
    async for raw in stream_messages(broker, lay.failed_stream, subject, info.state.first_seq, info.state.last_seq):
        yield raw
        found += 1
        if found >= limit:
            return


def _info(raw: api.RawStreamMsg) -> tuple[dict, bytes]:
    """The dead letter's record (why, when, the original headers) and the job body; a message that
    is no such record (forged, damaged) is reported as what it is, never fatal to a listing."""
    try:
        return unpack_record(raw.data or b"\n")
    except SerializationError as exc:
        return {"reason": f"unreadable failed entry: {exc}"}, b""


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _requeue_meta(seq: int, info: dict) -> tuple[dict, JobMeta]:
    """The original job's headers and their checked meta; :class:`SerializationError` naming the entry
    and the problem when it can't be requeued. Checked in full before a requeue writes anything."""
    if info.get("refused") is True:
        raise SerializationError(
            f"failed entry {seq} was refused, not run ({_text(info.get('reason'))}): it is no job of its own "
            "(its id may name another's), so it cannot be requeued"
        )
    headers = info.get("original_headers")
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise SerializationError(
            f"failed entry {seq} is not a naq_nb job ({_text(info.get('reason'))}); it cannot be requeued"
        )
    try:
        return dict(headers), decode_meta(headers)
    except SerializationError as exc:
        raise SerializationError(f"failed entry {seq} cannot be requeued: {exc}") from None


def _requeueable(raw: api.RawStreamMsg, info: dict) -> bool:
    """Whether the entry carries a job that can be published again (not refused, not forged)."""
    assert raw.seq is not None  # a stored message always has its sequence
    try:
        _requeue_meta(raw.seq, info)
    except SerializationError:
        return False
    return True


def _entry(raw: api.RawStreamMsg, broker: Broker) -> FailedEntry:
    info, _ = _info(raw)
    meta = header_meta((raw.headers or {}).get(HEADER_META))
    assert raw.seq is not None  # a stored message always has its sequence
    return {
        "seq": raw.seq,
        "job_id": _text(meta.get("id")),
        "queue": broker.layout.queue_of_subject(raw.subject or ""),
        "func": _text(meta.get("fn")),
        "reason": _text(info.get("reason")),
        "error": _text(info.get("reason")),
        "traceback": _text(info.get("traceback")) or "",
        "attempts": _count(info.get("attempts")),
        "failures": _count(info.get("failures")),
        "worker": _text(info.get("worker")),
        "failed_at": record_time(info.get("failed_at")),
        "exc_type": _text(info.get("exc_type")),
        "requeueable": _requeueable(raw, info),
    }


async def list_failed(broker: Broker, queue: str | None = None, limit: int = 1000) -> list[FailedEntry]:
    """Failed jobs, oldest first: seq, job_id, queue, func, reason, traceback, attempts, worker."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, not {limit!r}")
    return [_entry(raw, broker) async for raw in _iter_failed(broker, queue, limit)]


async def count_failed(broker: Broker, queue: str | None = None) -> int:
    """How many entries the failed stream holds (of ``queue``): one stream-info request, so a listing
    cut at its limit can say how much it left out."""
    lay = broker.layout
    await broker.ensure_layout()
    if queue is None:
        return (await broker.js.stream_info(lay.failed_stream)).state.messages
    subject = lay.failed_subject(queue)
    info = await broker.js.stream_info(lay.failed_stream, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def requeueable_seqs(broker: Broker, queue: str | None = None) -> list[int]:
    """The sequences of every requeueable entry (of ``queue``), oldest first, with no limit: what
    ``requeue --all`` works through. Only the numbers are kept, not the entries with their tracebacks,
    so a failed stream of a million entries costs megabytes here, not gigabytes."""
    entries = _iter_failed(broker, queue, _MAX_SEQ)
    return [raw.seq async for raw in entries if raw.seq and _requeueable(raw, _info(raw)[0])]


_MAX_SEQ = 2**63 - 1  # a stream sequence is a uint64; the server refuses more than an int64 here


async def _by_seq(broker: Broker, seq: int) -> api.RawStreamMsg:
    if not 1 <= seq <= _MAX_SEQ:
        raise JobNotFoundError(f"no failed entry with sequence {seq} (sequences start at 1)")
    try:
        return await broker.js.get_msg(broker.layout.failed_stream, seq=seq)
    except NotFoundError:
        raise JobNotFoundError(f"no failed entry with sequence {seq}") from None


def _entry_id(raw: api.RawStreamMsg) -> str | None:
    """The job id an entry's headers name (None: none, or no text)."""
    jid = header_meta((raw.headers or {}).get(HEADER_META)).get("id")
    return jid if isinstance(jid, str) else None


def _refused(raw: api.RawStreamMsg) -> bool:
    return _info(raw)[0].get("refused") is True


async def _hinted(broker: Broker, job_id: str) -> api.RawStreamMsg | None:
    """The entry the job's status record names (``failed_seq``, written when a worker dead-lettered
    it) if that entry is the job's own failure: its id in the entry's headers, not refused. None when
    there is no such hint or it does not hold: the caller scans. The record is unsigned and may be
    stale (the job requeued since) or forged, so only the entry it points at is believed."""
    if not WIRE_ID_RE.fullmatch(job_id):
        return None  # no job's record has this key (and the KV client refuses it)
    kv = await broker.kv(broker.layout.status_bucket)
    try:
        seq = decode_status((await kv.get(job_id)).value or b"").get("failed_seq")
    except (KeyNotFoundError, SerializationError):
        return None  # none (expired, never written) or damaged
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_SEQ:
        return None
    try:
        raw = await broker.js.get_msg(broker.layout.failed_stream, seq=seq)
    except NotFoundError:
        return None  # requeued (deleted), expired, or never there
    return raw if _entry_id(raw) == job_id and not _refused(raw) else None


class FailedFinder:
    """Failed entries by job id, for one requeue or many (``naq failed requeue A B C``).

    Each id is tried first through its status record (:func:`_hinted`: two reads). The ids that
    does not settle share one pass over the failed stream: a later lookup reads on only from where
    the pass stopped, and re-reads the entries an earlier one noted (a requeue may have taken them).
    Without a hint the answer is the old scan's: the job's oldest own failure, else the oldest
    refused message naming its id. (A hint can differ from that only when one id has several own
    failures in the stream, and then names one of that job's own failures too.)"""

    def __init__(self, broker: Broker, job_ids: Iterable[str] = ()) -> None:
        self.b = broker
        self.wanted = set(job_ids)  # the ids the pass notes entries of
        self.upto = 0  # the pass has read the stream through this sequence
        self.noted: dict[str, list[tuple[int, bool]]] = {}  # id -> (seq, refused) of its entries, oldest first
        # Entries this lookup's own reading just got, used as read; one noted by an earlier lookup is
        # read again (a requeue may have taken it since).
        self.fresh: dict[int, api.RawStreamMsg] = {}

    async def find(self, job_id: str) -> api.RawStreamMsg | None:
        self.fresh = {}
        raw = await _hinted(self.b, job_id)
        if raw is not None:
            return raw
        if job_id not in self.wanted:  # the pass so far has not noted its entries: start it again
            self.wanted.add(job_id)
            self.upto, self.noted = 0, {}
        raw = await self._first(job_id, refused=False)
        if raw is None:
            await self._read_on(job_id)
            raw = await self._first(job_id, refused=False)
        return raw or await self._first(job_id, refused=True)

    async def _first(self, job_id: str, *, refused: bool) -> api.RawStreamMsg | None:
        """The oldest noted entry of ``job_id`` of that kind still in the stream."""
        for seq, was_refused in list(self.noted.get(job_id, ())):
            if was_refused != refused:
                continue
            raw = self.fresh.get(seq)
            if raw is None:
                try:
                    raw = await self.b.js.get_msg(self.b.layout.failed_stream, seq=seq)
                except NotFoundError:
                    raw = None
            if raw is not None and _entry_id(raw) == job_id and _refused(raw) == refused:
                return raw
            self.noted[job_id].remove((seq, was_refused))  # gone since it was noted
        return None

    async def _read_on(self, job_id: str) -> None:
        """Read on to the stream's end, noting the wanted ids' entries; stop early at an own failure
        of ``job_id`` (an older one there is not, and no entry is ever added before it)."""
        lay = self.b.layout
        await self.b.ensure_layout()
        info = await self.b.js.stream_info(lay.failed_stream)
        if info.state.last_seq < self.upto:  # the stream was made again: its sequences start over
            self.upto, self.noted = 0, {}
        first = max(self.upto + 1, info.state.first_seq)
        async for raw in stream_messages(self.b, lay.failed_stream, None, first, info.state.last_seq):
            assert raw.seq is not None  # a stored message always has its sequence
            self.upto = raw.seq
            jid = _entry_id(raw)
            if jid in self.wanted:
                refused = _refused(raw)
                self.noted.setdefault(jid, []).append((raw.seq, refused))
                self.fresh[raw.seq] = raw
                if jid == job_id and not refused:
                    return
        self.upto = max(self.upto, info.state.last_seq)


async def _find(broker: Broker, ref: str | int, finder: FailedFinder | None = None) -> api.RawStreamMsg:
    """An int (or ``"#N"``) is a failed-stream sequence; a string a job id, or, when no failed
    job has that id and it is all digits, a sequence (job ids may be all digits too)."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise TypeError(f"a failed entry is named by its job id (str) or sequence (int), not {type(ref).__name__}")
    if isinstance(ref, int):
        return await _by_seq(broker, ref)
    if ref.startswith("#") and ref[1:].isdigit():
        return await _by_seq(broker, int(ref[1:]))
    raw = await (finder or FailedFinder(broker, [ref])).find(ref)
    if raw is not None:
        return raw
    if ref.isdigit():
        return await _by_seq(broker, int(ref))
    raise JobNotFoundError(f"no failed job with id {ref!r}")


async def requeue_failed(broker: Broker, ref: str | int, *, finder: FailedFinder | None = None) -> str:
    """Put a failed job (by job id, or failed-stream sequence: an int or ``"#N"``) back on its queue;
    returns the job id. An all-digit string names the failed job with that id if there is one, else
    the entry with that sequence.

    Raises :class:`JobNotFoundError` for no such entry, :class:`SerializationError` naming the
    entry for one that is no requeueable naq_nb job, and :class:`ConcurrentUpdateError` when the job
    is no longer failed (another requeue of it went first, or it ran again); all checked before
    anything is written. Requeues of many ids in a row share one ``finder`` (``FailedFinder(broker,
    ids)``), so the ids their status records do not settle cost one pass over the stream, not one each."""
    raw = await _find(broker, ref, finder)
    assert raw.seq is not None  # a stored message always has its sequence
    try:
        info, body = unpack_record(raw.data or b"\n")
    except SerializationError as exc:
        raise SerializationError(f"failed entry {raw.seq} is unreadable ({exc}); it cannot be requeued") from None
    # Everything is checked before the first write: a bad entry must not reset a job's records.
    headers, meta = _requeue_meta(raw.seq, info)
    jid, queue = meta.job_id, meta.queue
    lay = broker.layout
    rec = first_record(
        jid,
        queue,
        JobStatus.QUEUED,
        func=meta.function,
        name=None,
        enqueued_at=time.time(),
        requeued_from=raw.seq,
        depends_on=list(meta.options.depends_on),
    )
    msg_id = await _claim(broker, jid, raw.seq, rec)  # before the result goes: a stale requeue changes nothing
    results = await broker.kv(lay.results_bucket)
    await payloads.drop_result(broker, jid)  # its object (a result over max_payload) goes with it
    try:
        await results.purge(jid)  # the old failure must not answer waiters of the new run
    except KeyNotFoundError:
        pass
    headers[HEADER_MSG_ID] = msg_id
    await broker.js.publish(lay.queue_subject(queue), body, headers=headers)
    try:
        await broker.js.delete_msg(lay.failed_stream, raw.seq)
    except APIError as exc:
        if not isinstance(exc, NotFoundError) and exc.err_code not in JS_MESSAGE_GONE:
            raise  # (gone: an interrupted requeue of this entry, done again, deleted it first)
    return jid


def _requeue_msg_id(jid: str, seq: int, now: StatusRecord | None, revision: int, redo: bool) -> str:
    """The message id a requeue publishes with. A redo of a requeue cut short takes the id its claim
    recorded, so a publish that did land the first time is dropped as its copy: one run. A claim over
    a failure takes one no requeue of this job used before (neither the job's own id, nor that of an
    earlier requeue of the same entry: both may still be inside the de-duplication window, and a
    publish dropped as a copy would leave the job queued with no message). The revision of the status
    record it replaces gives that: at most one claim replaces a given revision (0, none, repeats only
    if the record the last claim created is gone again)."""
    if redo:
        used = now.get("requeue_msg_id") if now is not None else None
        # Without one: a claim written before ids were recorded, which published with this form.
        return used if isinstance(used, str) and used.startswith(f"{jid}-requeue-{seq}-") else f"{jid}-requeue-{seq}"
    return f"{jid}-requeue-{seq}-{revision}"


async def _claim(broker: Broker, jid: str, seq: int, rec: StatusRecord) -> str:
    """Set the job's status to ``rec`` (queued) over a record that says it failed (or none, or a
    damaged one), revision-checked, so of two requeues of one failure one goes on; returns the
    message id to publish with, recorded in the new status. A job that is no longer failed
    (requeued, run again, cancelled since) raises :class:`ConcurrentUpdateError`, its records
    untouched; a requeue of this same entry that was cut short after its claim may go on."""
    kv = await broker.kv(broker.layout.status_bucket)
    try:
        entry = await kv.get(jid)
    except KeyNotFoundError:
        entry = None
    now = None
    if entry is not None and entry.value:
        try:
            now = decode_status(entry.value)
        except SerializationError:
            now = None  # damaged: the failed entry is the better witness
    status = now.get("status") if now is not None else None
    redo = status == JobStatus.QUEUED.value and now is not None and now.get("requeued_from") == seq
    if status is not None and status != JobStatus.FAILED.value and not redo:
        raise ConcurrentUpdateError(
            f"job {jid} is {_text(status)} now, not failed: failed entry {seq} is out of date "
            "(requeued or run again since); nothing was changed"
        )
    revision = (entry.revision or 0) if entry is not None else 0  # 0: no record, created below
    msg_id = _requeue_msg_id(jid, seq, now, revision, redo)
    claimed = encode_status({**rec, "requeue_msg_id": msg_id})
    try:
        if entry is None:
            await kv.create(jid, claimed)
        else:
            await kv.update(jid, claimed, last=entry.revision)
    except KeyWrongLastSequenceError:
        raise ConcurrentUpdateError(
            f"job {jid} changed while failed entry {seq} was being requeued (another requeue?); nothing was changed"
        ) from None
    return msg_id
