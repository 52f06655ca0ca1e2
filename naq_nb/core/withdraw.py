"""The jobs an interrupted enqueue had sent are cancelled.

A Ctrl-C (or a task cancel) while ``nq.map``, ``nq.sweep`` or ``enqueue_many`` publishes left the
jobs already sent running with no handle anyone could wait on or cancel. As
``concurrent.futures.Executor.map`` cancels the work it has not finished, they are cancelled here:
each through :func:`~naq_nb.core.cancel.cancel_job` (its record ``cancelled``, its queued message
deleted, a running one told, a ``cancelled`` result stored), :data:`WITHDRAW_CONCURRENCY` at a time.

Best effort and bounded (:data:`WITHDRAW_SECONDS`), it never raises: a connection error stops it
(the server is gone; each further request would wait out its own timeout), and one line says how
many were sent, cancelled, and left to run. Jobs sent in fast-ingest batches have no stream
sequence of their own (nor has a job whose acknowledgement never came): their queue is read once for
all of them (a cancel of each alone would read it once per job), from where the call's messages
start: read from the queue's first message, a backlog ahead of them used up the search's time, and
they stayed queued. A job with a chosen id (``job_id`` / ``key``) is left alone:
the id may name a job an earlier call sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Sequence

from nats.js.errors import APIError

from .aftercancel import run_to_end
from .broker import CONNECTION_ERRORS
from .cancel import cancel_job
from .envelope import HEADER_META, header_meta
from .errors import ConcurrentUpdateError, JobNotFoundError, SerializationError
from .notices import say_loudly
from .oneshot import stream_messages
from .schedules import ScheduleNotFoundError, change_schedule

if TYPE_CHECKING:
    from .broker import Broker
    from .job import Job

__all__ = ["withdraw", "describe", "WITHDRAW_SECONDS", "WITHDRAW_CONCURRENCY"]

log = logging.getLogger("naq_nb")

#: Seconds the jobs an interrupted enqueue sent may take to be cancelled (the call itself returned).
WITHDRAW_SECONDS = 30.0
#: Jobs cancelled at once.
WITHDRAW_CONCURRENCY = 64
#: The search for messages of jobs with no known sequence takes at most this much of it (the
#: cancels need the rest).
SEARCH_SECONDS = WITHDRAW_SECONDS / 2
# What a cancel may meet that stops that job's cancel, not the others' (a connection error stops them too).
_CANCEL_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    APIError,
    ConcurrentUpdateError,
    SerializationError,
)


async def withdraw(
    b: "Broker",
    sent: Sequence["Job"],
    total: int,
    what: str = "an enqueue",
    *,
    speak: bool = True,
    scheduled: bool = False,
    after: int = 0,
) -> Counter[str]:
    """Cancel the jobs in ``sent`` (handed to the server by ``what``, a call of ``total`` jobs that was
    then interrupted; in the order sent, on one connection), within :data:`WITHDRAW_SECONDS`, in a
    task of its own: a cancel of the caller meanwhile stops its wait, not the withdrawal. Returns how
    it went (``cancelled``, ``ended``, ``not stored``, ``left``), which it says too
    (:func:`.notices.say_loudly`) unless ``speak`` is False. ``scheduled``: the jobs were stored as
    schedules (``nq.options(delay=...)``), which are deleted; no queue is searched for them.
    ``after``: a jobs-stream sequence every message of ``sent`` comes after (0: not known)."""
    jobs = list({j.job_id: j for j in sent if not (j.options.job_id or j.options.key)}.values())
    tally: Counter[str] = Counter()
    if jobs:
        work = _withdraw(b, jobs, tally, _Search(what, total, speak, scheduled, _search_from(jobs, after)))
        await run_to_end(work, WITHDRAW_SECONDS + 5, f"cancelling what {what} sent")
    return tally


class _Search:
    """A withdrawal's wording and what it found: the sequences of the queued messages to delete."""

    def __init__(self, what: str, total: int, speak: bool, scheduled: bool, first: int) -> None:
        self.what, self.total, self.speak = what, total, speak
        self.first = first  # no message of the jobs comes before this sequence of the jobs stream
        self.seqs: dict[str, int] = {}
        self.complete = scheduled  # every queue read (or none to read): a job not found there has no message
        self.gone = False  # a connection error: the server is gone, the rest are not tried
        self.why: list[str] = []  # the errors met, first first


async def _withdraw(b: "Broker", jobs: list["Job"], tally: Counter[str], s: _Search) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHDRAW_SECONDS
    try:
        if not s.complete:
            search_end = loop.time() + SEARCH_SECONDS
            s.seqs, s.complete = await _find_queued(b, [j for j in jobs if j.sequence is None], s.first, search_end)
    except CONNECTION_ERRORS as exc:
        s.gone = True
        s.why.append(f"{type(exc).__name__}: {exc}")
    gate = asyncio.Semaphore(WITHDRAW_CONCURRENCY)

    async def one(job: "Job") -> None:
        async with gate:
            if s.gone:
                tally["left"] += 1
                return
            try:
                tally[await _cancel_one(b, job, s)] += 1
            except _CANCEL_ERRORS as exc:
                s.gone = s.gone or isinstance(exc, CONNECTION_ERRORS)
                tally["left"] += 1
                s.why.append(f"{type(exc).__name__}: {exc}")

    tasks = [asyncio.ensure_future(one(j)) for j in jobs]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    finally:
        for t in tasks:
            t.cancel()
    tally["left"] += len(pending)
    if s.speak:
        say_loudly(log, _summary(s, len(jobs), tally, bool(pending)), logging.WARNING)


async def _cancel_one(b: "Broker", job: "Job", s: _Search) -> str:
    """Cancel one job: ``cancelled``, ``ended`` (it had already), or ``not stored``."""
    reason = f"job {job.job_id} was cancelled: {s.what} that sent it was interrupted"
    seq = job.sequence or s.seqs.get(job.job_id)
    try:
        # (scan=False: a queue searched once for all of them is not searched again for each)
        return "cancelled" if await cancel_job(b, job.job_id, seq, reason=reason, scan=False) else "ended"
    except JobNotFoundError:
        pass  # no record: not stored, stored without its record, or a schedule stored before its record
    if seq:
        await b.js.delete_msg(b.layout.jobs_stream, seq)
    try:
        await change_schedule(b, job.job_id, "cancel")
    except ScheduleNotFoundError:
        return "not stored"
    return "cancelled"


def _summary(s: _Search, sent: int, tally: Counter, late: bool) -> str:
    cause = f"not done within {WITHDRAW_SECONDS:g}s" if late else s.why[0] if s.why else "?"
    jobs = "job" if s.total == 1 else "jobs"
    line = f"{s.what} of {s.total:,} {jobs} was interrupted after sending {sent:,}: {describe(tally, cause)}"
    if not s.complete and not s.gone:
        line += (
            "; their queue was read only in part, so some may still wait in it, marked cancelled, for a "
            "worker that did not hear of the cancel to run them"
        )
    return line


def describe(tally: Counter, cause: str = "") -> str:
    """``1,000 cancelled, 2 had already ended; 3 could not be cancelled (why) and may run``."""
    parts = [f"{tally['cancelled']:,} cancelled"]
    if tally["ended"]:
        parts.append(f"{tally['ended']:,} had already ended")
    if tally["not stored"]:
        parts.append(f"{tally['not stored']:,} {'was' if tally['not stored'] == 1 else 'were'} not stored")
    line = ", ".join(parts)
    if tally["left"]:
        line += f"; {tally['left']:,} could not be cancelled{f' ({cause})' if cause else ''} and may run"
    return line


def _search_from(jobs: list["Job"], after: int) -> int:
    """The first sequence of the jobs stream a message of ``jobs`` (in the order sent) with no known
    sequence may have: one connection's messages to a stream are stored in the order sent, so none
    comes before the last known sequence of the jobs sent before the first unknown one, or ``after``."""
    for j in jobs:
        if j.sequence is None:
            break
        after = max(after, j.sequence)
    return after + 1


async def _find_queued(b: "Broker", jobs: list["Job"], first: int, deadline: float) -> tuple[dict[str, int], bool]:
    """The stream sequences of the messages of ``jobs`` still waiting in their queues, read in one
    pass per queue from sequence ``first`` (a backlog ahead of it is not read); and whether the
    passes ended (False: cut by ``deadline``)."""
    wanted: dict[str, set[str]] = {}
    for j in jobs:
        wanted.setdefault(j.queue_name, set()).add(j.job_id)
    found: dict[str, int] = {}
    if not wanted:
        return found, True
    last = (await b.js.stream_info(b.layout.jobs_stream)).state.last_seq  # (every message sent is stored by now)
    loop = asyncio.get_running_loop()
    for queue, ids in wanted.items():
        async for raw in stream_messages(b, b.layout.jobs_stream, b.layout.queue_subject(queue), first, last):
            jid = header_meta((raw.headers or {}).get(HEADER_META)).get("id")
            if jid in ids and raw.seq is not None:
                found[jid] = raw.seq
                ids.discard(jid)
                if not ids:
                    break
            if loop.time() > deadline:
                return found, False
    return found, True
