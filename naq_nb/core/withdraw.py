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

A group's cancel (:func:`cancel_many`) goes the same way, with every job of the group, its chosen
ids included: the caller holds their handles.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Mapping, Sequence

from nats.js.errors import APIError

from .aftercancel import run_to_end
from .broker import CONNECTION_ERRORS
from .blobs import BlobRef
from .cancel import cancel_job
from .deps import settle_dependents_of
from .envelope import HEADER_META, header_meta
from .errors import ConcurrentUpdateError, JobNotFoundError, SerializationError
from .notices import say_loudly
from .oneshot import stream_messages
from .queued import delete_message
from .schedules import ScheduleNotFoundError, change_schedule

if TYPE_CHECKING:
    from .broker import Broker
    from .job import Job

__all__ = ["withdraw", "cancel_many", "describe", "WITHDRAW_SECONDS", "WITHDRAW_CONCURRENCY"]

log = logging.getLogger("naq_nb")

#: Seconds the jobs an interrupted enqueue sent may take to be cancelled (the call itself returned).
WITHDRAW_SECONDS = 30.0
#: Jobs cancelled at once.
WITHDRAW_CONCURRENCY = 64
#: The search for messages of jobs with no known sequence takes at most this much of it (the
#: cancels need the rest).
SEARCH_SECONDS = WITHDRAW_SECONDS / 2
#: A group's cancel may take this much longer per job (50,000 jobs: about 2 minutes at the ~2 ms a
#: cancel costs on a busy 2-core machine): the user asked for all of them.
GROUP_SECONDS_PER_JOB = 0.005
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


async def cancel_many(b: "Broker", jobs: Sequence["Job"], known: Mapping[str, int] | None = None) -> dict[str, str]:
    """Cancel ``jobs`` together (``JobGroup.cancel``): :data:`WITHDRAW_CONCURRENCY` at a time, their
    queues read once for the messages of those with no known sequence (``known``: sequences learnt
    elsewhere), where a cancel of each alone read its queue up to it (about 5 ms a job, 50,000 taking
    minutes). Returns each job's outcome: ``cancelled``, ``ended`` (it had already), ``not stored``,
    or ``left`` (not cancelled: a connection error, or :data:`WITHDRAW_SECONDS` ran out; one warning
    says why). A cancel of the caller stops its wait, not the cancels."""
    unique = list({j.job_id: j for j in jobs}.values())
    tally: Counter[str] = Counter()
    if not unique:
        return {}
    s = _Search("a group cancel", len(unique), False, False, _search_from(unique, 0), interrupted=False)
    s.seconds += GROUP_SECONDS_PER_JOB * len(unique)
    s.search_seconds += GROUP_SECONDS_PER_JOB * len(unique) / 2
    s.seqs.update(known or {})
    await run_to_end(_withdraw(b, unique, tally, s), s.seconds + 5, "cancelling a group's jobs")
    if tally["left"]:
        cause = s.why[0] if s.why else f"not done within {s.seconds:g}s"
        log.warning("cancelling %d jobs: %s", len(unique), describe(tally, cause))
    return {j.job_id: s.outcomes.get(j.job_id, "left") for j in unique}


class _Search:
    """A withdrawal's wording and what it found: the sequences of the queued messages to delete."""

    def __init__(
        self, what: str, total: int, speak: bool, scheduled: bool, first: int, interrupted: bool = True
    ) -> None:
        self.what, self.total, self.speak, self.interrupted = what, total, speak, interrupted
        self.outcomes: dict[str, str] = {}  # job id -> how its cancel went (a tally entry)
        self.seconds, self.search_seconds = WITHDRAW_SECONDS, SEARCH_SECONDS  # (read now: tests change them)
        self.plain: set[str] = set()  # jobs whose queued message was read: its body names no object
        self.first = first  # no message of the jobs comes before this sequence of the jobs stream
        self.seqs: dict[str, int] = {}
        self.complete = scheduled  # every queue read (or none to read): a job not found there has no message
        self.gone = False  # a connection error: the server is gone, the rest are not tried
        self.why: list[str] = []  # the errors met, first first


async def _withdraw(b: "Broker", jobs: list["Job"], tally: Counter[str], s: _Search) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.seconds
    try:
        if not s.complete:
            search_end = loop.time() + s.search_seconds
            unknown = [j for j in jobs if j.sequence is None and j.job_id not in s.seqs]
            found, s.complete = await _find_queued(b, unknown, s.first, search_end, s.plain)
            s.seqs.update(found)
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
                outcome = await _cancel_one(b, job, s)
            except _CANCEL_ERRORS as exc:
                s.gone = s.gone or isinstance(exc, CONNECTION_ERRORS)
                outcome = "left"
                s.why.append(f"{type(exc).__name__}: {exc}")
            tally[outcome] += 1
            s.outcomes[job.job_id] = outcome

    tasks = [asyncio.ensure_future(one(j)) for j in jobs]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    finally:
        for t in tasks:
            t.cancel()
    tally["left"] += len(pending)
    if not s.interrupted and not s.gone:
        await settle_dependents_of(b, [jid for jid, how in s.outcomes.items() if how == "cancelled"], "cancelled")
    if s.speak:
        say_loudly(log, _summary(s, len(jobs), tally, bool(pending)), logging.WARNING)


async def _cancel_one(b: "Broker", job: "Job", s: _Search) -> str:
    """Cancel one job: ``cancelled``, ``ended`` (it had already), or ``not stored``."""
    reason = f"job {job.job_id} was cancelled: {s.what} that sent it was interrupted" if s.interrupted else None
    seq = job.sequence or s.seqs.get(job.job_id)
    try:
        # (scan=False: a queue searched once for all of them is not searched again for each)
        # (a group's dependents are settled after, all of them with one look at the waiting stream)
        done = await cancel_job(
            b, job.job_id, seq, reason=reason, scan=False, plain_body=job.job_id in s.plain, dependents=s.interrupted
        )
        return "cancelled" if done else "ended"
    except JobNotFoundError:
        pass  # no record: not stored, stored without its record, or a schedule stored before its record
    if seq:
        await delete_message(b, b.layout.jobs_stream, seq)
    try:
        await change_schedule(b, job.job_id, "cancel")
    except ScheduleNotFoundError:
        return "not stored"
    return "cancelled"


def _summary(s: _Search, sent: int, tally: Counter, late: bool) -> str:
    cause = f"not done within {s.seconds:g}s" if late else s.why[0] if s.why else "?"
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


async def _find_queued(
    b: "Broker", jobs: list["Job"], first: int, deadline: float, plain: set[str] | None = None
) -> tuple[dict[str, int], bool]:
    """The stream sequences of the messages of ``jobs`` still waiting in their queues, read in one
    pass per queue from sequence ``first`` (a backlog ahead of it is not read); and whether the
    passes ended (False: cut by ``deadline``). ``plain`` gets the ids whose body names no object."""
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
                if plain is not None and BlobRef.from_body(raw.data or b"") is None:
                    plain.add(jid)
                ids.discard(jid)
                if not ids:
                    break
            if loop.time() > deadline:
                return found, False
    return found, True
