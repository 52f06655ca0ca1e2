"""A run's final writes: its status and its result, and what stands when a result exists already.

A result is written once (create-only): a second run of the same job, a cancel
that got there first or an earlier try whose acknowledgement was lost all leave
the first result standing, and the status record is made to tell that one.
Both writes are acknowledged before anyone is told (see ``JobRunner._commit``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from nats.js.errors import APIError

from .broker import Broker, quiet_futures
from .errors import JS_WRONG_LAST_SEQUENCE, SerializationError
from .layout import EXPECTED_LAST_SUBJECT_SEQ, create_only
from .records import ResultRecord
from .results import get_result, push_early
from .status import TERMINAL_VALUES, StatusRecord, encode_status, with_status

__all__ = ["SentWrites", "send_final_writes", "settle_final_writes", "existing_result", "write_status"]

log = logging.getLogger("naq_nb.worker")


class SentWrites(NamedTuple):
    """A run's final writes on their way: each write's acknowledgement to come, and whether the
    result was pushed early (``told``)."""

    status: asyncio.Future
    result: asyncio.Future
    told: bool


async def send_final_writes(
    b: Broker, jid: str, result: bytes, rec: StatusRecord, bound: float, early: tuple[str, str] | None
) -> SentWrites:
    """Send status ``rec`` and ``result`` (create-only), each acknowledged within ``bound`` seconds;
    with ``early`` (:func:`.results.early_target`), push the result to its client as well, and have
    the server copy both acknowledgements to it. Nothing here waits for an acknowledgement: see
    :func:`settle_final_writes`."""
    lay = b.layout
    token, run = early or ("", "")
    status_fut = await b.publish_async(
        lay.kv_subject(lay.status_bucket, jid),
        encode_status(rec),
        timeout=bound,
        ack_copy=(token, jid, "s", run) if early else None,
    )
    try:
        res_fut = await b.publish_async(
            lay.kv_subject(lay.results_bucket, jid),
            result,
            headers=create_only(),
            timeout=bound,
            ack_copy=(token, jid, "r", run) if early else None,
        )
    except BaseException:
        quiet_futures(status_fut)  # the result's failure is the news
        raise
    told = early is not None and await push_early(b, token, jid, result, run)
    if early is not None:
        # A lone job's client is waiting on these three: they leave now, not when nats-py's
        # flusher task next gets the loop (after the slot's own work up to its next wait).
        b.write_out()
    return SentWrites(status_fut, res_fut, told)


async def settle_final_writes(
    b: Broker, jid: str, result: bytes, rec: StatusRecord, bound: float, sent: SentWrites
) -> tuple[bool, bool]:
    """Both acknowledgements of ``sent`` awaited; ``(stood, told)``.

    stood: ``result`` is the stored one (else an earlier result stands, and the status now
    tells that one); told: its client had it pushed early and both acknowledgements copied, so
    it needs no push after. A TimeoutError if an acknowledgement misses its bound."""
    try:
        await sent.result
    except APIError as exc:
        await asyncio.gather(sent.status, return_exceptions=True)  # superseded just below
        if exc.err_code != JS_WRONG_LAST_SEQUENCE:
            raise
        async with asyncio.timeout(bound):
            return await _keep_earlier_result(b, jid, result, rec), False
    except BaseException:
        quiet_futures(sent.status)  # its failure is not news
        raise
    await sent.status  # stored too before anyone is told: a reader of the result sees the final status
    return True, sent.told


async def existing_result(b: Broker, jid: str) -> ResultRecord | None:
    """The job's stored result. One that can't be read (damaged, forged, not an end) still holds
    the key, and a result is written once: it stands as a failure naming why, so the job is
    neither run again nor handed back for ever."""
    try:
        rec = await get_result(b, jid)
        if rec is None or rec.status in TERMINAL_VALUES:
            return rec
        problem = f"its status is {rec.status!r}, not an end"
    except SerializationError as exc:
        problem = str(exc)
    log.error("job %s: its stored result record is unreadable (%s); the job ends failed", jid, problem)
    return ResultRecord.refusal(SerializationError(f"the stored result of job {jid} is unreadable: {problem}"))


async def write_status(b: Broker, jid: str, rec: StatusRecord) -> None:
    """Write status ``rec``, acknowledged."""
    await b.js.publish(b.layout.kv_subject(b.layout.status_bucket, jid), encode_status(rec))


_RUN_FIELDS = ("worker", "attempts", "failures", "started_at", "finished_at")


async def _keep_earlier_result(b: Broker, jid: str, result: bytes, rec: StatusRecord) -> bool:
    """A result exists already (cancelled meanwhile, a duplicate run, or our earlier try): it stands."""
    existing = await existing_result(b, jid)
    if existing is not None:
        # The status tells the run whose result stands (its worker, attempts, end), not ours.
        meta: dict[str, Any] = dict(existing.meta)
        ran = {k: meta[k] for k in _RUN_FIELDS if k in meta}
        end = {"error": meta.get("error"), "traceback": meta.get("traceback"), **ran}
        await write_status(b, jid, with_status(rec, existing.status, **end))
        return False  # (or our earlier try, its acknowledgement lost: the client reads it)
    return await _write_over_marker(b, jid, result)


async def _write_over_marker(b: Broker, jid: str, result: bytes) -> bool:
    """The key holds only a delete/purge marker (a requeued job's old result was purged):
    write over exactly that marker, still refusing to overwrite a result written meanwhile."""
    lay = b.layout
    subject = lay.kv_subject(lay.results_bucket, jid)
    try:
        last = await b.js.get_last_msg(lay.kv_stream(lay.results_bucket), subject)
        await b.js.publish(subject, result, headers={EXPECTED_LAST_SUBJECT_SEQ: str(last.seq)})
        return True
    except APIError as exc:
        if exc.err_code != JS_WRONG_LAST_SEQUENCE:
            raise
        return False
