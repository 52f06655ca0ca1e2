"""A client's calls while its connection is down: wait for the reconnect within the call's bound,
and say so when it does not come, rather than let nats-py buffer the request (or the publish) and
answer with a bare "nats: timeout" once JetStream's request timeout has passed."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Sequence, TypeVar

from ..core.broker import Broker
from ..core.errors import JobNotStoredError, NoAnswerError
from ..core.job import Job

__all__ = ["until_reachable", "no_answer", "refuse_unsent", "within", "ANSWER_MARGIN"]

T = TypeVar("T")

#: Seconds a read may take past its caller's timeout (its last read) before it is given up as unanswered.
ANSWER_MARGIN = 1.0


async def until_reachable(b: Broker, timeout: float | None, url: str, what: str) -> float | None:
    """Wait for a lost connection to come back, within the call's ``timeout`` (None: as long as a
    JetStream request would have waited in nats-py's buffer, so a quick restart is ridden out as
    before); the time left of ``timeout``. :class:`NoAnswerError` naming ``what`` if it does not."""
    if b.is_connected:  # the per-call path: this one flag
        return timeout
    loop = asyncio.get_running_loop()
    start, bound = loop.time(), b.request_timeout if timeout is None else timeout
    if not await b.until_connected(bound):
        raise NoAnswerError(
            f"no connection to NATS at {url} while {what}: it was lost and is being retried "
            f"({_why(b)}); gave up after {bound:g}s"
        )
    return None if timeout is None else max(0.0, timeout - (loop.time() - start))


async def within(aw: Awaitable[T], timeout: float | None, url: str, what: str) -> T:
    """``await aw`` within the caller's ``timeout`` (and :data:`ANSWER_MARGIN`), else
    :class:`NoAnswerError` naming ``what``. A frozen server keeps the connection up and answers
    nothing: each JetStream read waits its own 10 s bound, however short the caller's timeout.
    A ``TimeoutError`` of ``aw``'s own (a job not finished in time) passes as it is."""
    if timeout is None:
        return await aw
    bound = asyncio.timeout(timeout + ANSWER_MARGIN)
    try:
        async with bound:
            return await aw
    except TimeoutError as exc:
        if bound.expired():
            raise no_answer(url, what) from exc
        raise


def _why(b: Broker) -> str:
    """What keeps the connection down, as far as nats-py told: a server that is up and refuses our
    credentials is not "down", and the user must act on it (nats-py retries it for ever)."""
    if b.refusal is not None:
        return f"the server refuses it: {b.refusal}; check user/password/token, --creds or TLS"
    return "server down or unreachable?"


def no_answer(url: str, what: str) -> NoAnswerError:
    return NoAnswerError(f"NATS at {url} did not answer while {what} (server down, frozen or overloaded?)")


async def refuse_unsent(b: Broker, jobs: Sequence[Job], url: str) -> None:
    """Before an acknowledged enqueue: a connection that is down (and stays so for the publish
    timeout) fails it with nothing sent. nats-py keeps what is published while it reconnects and
    sends it once back, so a job published now was stored after its call had failed, and the
    caller's retry ran it twice."""
    if b.is_connected or await b.until_connected(b.publish_timeout):
        return
    what = f"job {jobs[0].job_id} ({jobs[0].function_name})" if len(jobs) == 1 else f"{len(jobs)} jobs"
    raise JobNotStoredError(
        f"{what} not sent: the connection to NATS at {url} is down ({_why(b)}) and was not back within "
        f"{b.publish_timeout:g}s; nothing was sent, so calling again cannot store it twice",
        not_stored=[j.job_id for j in jobs],
    )
