"""A job message in a worker's hands, from arrival to ack/nak (shared by worker, runner and gate)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from .context import JobContext
from .envelope import JobMeta, decode_meta
from .errors import SerializationError
from .status import JobStatus, StatusRecord

__all__ = ["Delivery", "parse_meta", "ack_numbers", "nak", "STORED_NAK_DELAY"]

#: The least delay a nak is given. A nak with no delay lives only in the server's memory: a server
#: stopped right after it (``nq.local()``'s stop, a restart) forgets it and holds the job for its
#: whole ack_wait once back. A nak with any delay is written to the consumer's stored state.
STORED_NAK_DELAY = 0.001


@dataclass
class Delivery:
    """A message in this worker's hands, from arrival to ack/nak."""

    msg: Msg
    meta: JobMeta  # parsed before the Delivery is made (a bad header never gets one)
    delivered: int = 1  # JetStream's num_delivered: every delivery is counted
    seq: int = 0  # the message's stream sequence
    prev: StatusRecord | None = None  # the status record found on a redelivery
    prev_rev: int | None = None  # its revision (a claim with signing on writes over exactly that one)
    task: asyncio.Task | None = None  # the slot's task while the call runs: cancelled by a cancel notice or a stop
    ctx: JobContext | None = None  # while it runs
    started: float = 0.0
    cancelled: bool = False
    record: StatusRecord = field(default_factory=lambda: StatusRecord())
    suspect: bool = False  # arrived right after the worker's loop was blocked: maybe stale
    running_timer: asyncio.TimerHandle | None = None  # the deferred "running" record's timer (a child process runs it)
    running_written: bool = False
    ended: bool = False  # its run is over: no "running" record may be written any more
    final_sent: bool = False  # its final records may be out: a worker error after that must not overwrite them
    taken: int = 0  # how many jobs this worker had taken, this one included, when a slot took it

    def is_a_copy(self) -> bool:
        """Its job's record says another message of the job was taken (its ``seq``): a signed message
        sent again under a new message id, while or after that one ran. Its records stand."""
        prev = self.prev or {}
        untaken = (None, JobStatus.QUEUED.value, JobStatus.WAITING.value, JobStatus.SCHEDULED.value)
        taken = prev.get("status") not in untaken
        return taken and isinstance(prev.get("seq"), int) and prev["seq"] != self.seq


async def nak(msg: Msg, delay: float = 0.0) -> None:
    """Hand ``msg`` back for redelivery after ``delay`` seconds (at least :data:`STORED_NAK_DELAY`)."""
    await msg.nak(delay=max(delay, STORED_NAK_DELAY))


def parse_meta(msg: Msg) -> JobMeta:
    """The job's metadata from the message headers (SerializationError if it is not a naq job)."""
    try:
        return decode_meta(msg.headers)
    except SerializationError:
        raise
    except Exception as exc:  # a hand-made header no check foresaw: refused, never left to come back
        raise SerializationError(f"unreadable Naq-Meta header ({type(exc).__name__}: {exc})") from None


def ack_numbers(msg: Msg) -> tuple[int, int]:
    """``(num_delivered, stream sequence)`` of a JetStream message, read from its reply subject
    (nats-py's ``Msg.metadata`` builds a dataclass and a datetime per message, which a job never uses)."""
    t = (msg.reply or "").split(".")
    try:
        if len(t) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
            return int(t[4]), int(t[5])
        if len(t) >= 12:  # the same after a domain and an account hash
            return int(t[6]), int(t[7])
    except ValueError:
        pass
    md = msg.metadata  # anything else: nats-py's reading (raises for a message that is not JetStream's)
    return md.num_delivered, md.sequence.stream
