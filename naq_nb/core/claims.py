"""Chosen job ids (``job_id`` / ``key``): each is claimed for one call before its job is published.

The claim (a create-only key in the meta bucket) holds a digest of the call. A reused id of the
same call is that job, of another call a :class:`DuplicateJobError`. Once the job is acknowledged
the claim is marked stored; a reuse of an unmarked claim (an enqueue that failed half-way, its job
in doubt) sends the job again, which the server drops as a duplicate if it did arrive within the
jobs stream's de-duplication window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from nats.js.errors import APIError, KeyNotFoundError

from . import jsontext
from .broker import Broker, quiet_futures
from .errors import JS_WRONG_LAST_SEQUENCE, DuplicateJobError, SerializationError
from .layout import create_only
from .job import Job, JobStatus
from .status import decode_status

__all__ = ["call_digest", "claim_ids", "confirm_claims", "is_named"]

log = logging.getLogger("naq_nb")


def call_digest(body: bytes) -> str:
    """What makes two enqueues "the same call": the serialized function and arguments."""
    return hashlib.sha256(body).hexdigest()[:32]


def is_named(job: Job) -> bool:
    """A job with a chosen id (``job_id`` or ``key``): its id is claimed."""
    return bool(job.options.job_id or job.options.key)


async def claim_ids(
    b: Broker, jobs: list[Job], encoded: list[tuple[dict, bytes]], digests: dict[int, str]
) -> list[tuple[Job, tuple]]:
    """Claim every chosen job id (``job_id`` or ``key``) for its call, create-only, pipelined.

    A reused id of the same call (same function and arguments) is that job: it is marked
    ``duplicate`` and not published again, unless its claim was never marked stored and its record
    does not say it started (see the module docstring). A reused id of another call raises
    :class:`DuplicateJobError` before anything is published. Returns the jobs to publish.
    """
    lay = b.layout
    claims = []
    for job in jobs:
        if is_named(job):
            claim = _claim(digests[id(job)], job)
            fut = await b.publish_async(
                lay.kv_subject(lay.meta_bucket, lay.claim_key(job.job_id)),
                claim,
                headers=create_only(),
                what=f"the id claim of job {job.job_id}",
            )
            claims.append((job, digests[id(job)], fut))
    reused: set[str] = set()
    try:
        for job, digest, fut in claims:
            try:
                await fut
            except APIError as exc:
                if exc.err_code != JS_WRONG_LAST_SEQUENCE:
                    raise
                if await _same_call(b, job, digest):
                    reused.add(job.job_id)
    except BaseException:
        quiet_futures(*(fut for _j, _b, fut in claims))  # the first error is raised; the rest are not news
        raise
    todo = []
    for job, enc in zip(jobs, encoded):
        if job.job_id in reused:
            job.duplicate = True
        else:
            todo.append((job, enc))
    return todo


def _claim(digest: str, job: Job, stored: bool = False) -> bytes:
    claim = {"digest": digest, "fn": job.function_name, "ts": time.time()}
    return json.dumps({**claim, "stored": True} if stored else claim).encode()


async def confirm_claims(b: Broker, stored: list[Job], digests: dict[int, str]) -> None:
    """Mark the claims of chosen ids whose jobs are stored. A reuse of a marked id is that job; an
    unmarked claim may be an enqueue that failed half-way (its ``queued`` record stored, its job in
    doubt), so a reuse sends the job again. Best effort: an unmarked claim only costs that resend,
    which the server drops as a duplicate within its de-duplication window."""
    named = [j for j in stored if is_named(j)]
    if not named:
        return
    lay = b.layout
    claims = [
        (
            lay.kv_subject(lay.meta_bucket, lay.claim_key(j.job_id)),
            _claim(digests[id(j)], j, stored=True),
            f"the id claim of job {j.job_id}",
        )
        for j in named
    ]
    errors = await b.publish_each(claims)
    if errors:
        log.warning("%d stored jobs keep an unconfirmed id claim: %s", len(errors), errors[0])


async def _same_call(b: Broker, job: Job, digest: str) -> bool:
    """True if ``job``'s id is claimed by this very call and the job exists; raises if another call has it."""
    kv = await b.kv(b.layout.meta_bucket)
    try:
        claim = jsontext.loads((await kv.get(b.layout.claim_key(job.job_id))).value or b"{}")
    except (KeyNotFoundError, ValueError):
        claim = {}
    if claim.get("digest") != digest:
        raise DuplicateJobError(
            f"job id {job.job_id!r} is already used by another call ({claim.get('fn', '?')}); a reused "
            "job_id/key must be the same function with the same arguments, else choose another id"
        )
    if claim.get("stored"):
        return True
    try:
        entry = await (await b.kv(b.layout.status_bucket)).get(job.job_id)
    except KeyNotFoundError:
        return False  # claimed, but its first enqueue never got through: publish it now
    # Not known to be stored, and not started: its first enqueue may have stored only the record.
    # Send it again (if it was stored, within the window, the server drops the copy as a duplicate).
    try:
        status = decode_status(entry.value).get("status") if entry.value else None
    except SerializationError:
        return False  # an unreadable record proves nothing: send the job
    return status not in (JobStatus.QUEUED.value, JobStatus.WAITING.value)
