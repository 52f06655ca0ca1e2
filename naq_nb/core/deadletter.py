"""The failed stream's writer: a message copied there with why it failed (its original headers and
body kept, so a requeue sends it again), and messages refused outright, for which no job's records
may be written (malformed, unverified, a copy of a job that ran)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from . import jsontext, payloads
from .envelope import HEADER_META, header_size
from .layout import WIRE_ID_RE
from .serialization import pack_record
from .tracebacks import bounded_failure_text

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["DeadLetters", "job_id_of"]

log = logging.getLogger("naq_nb.worker")


class DeadLetters:
    """One worker's writes to the failed stream; ``stats["malformed"]`` counts the refused messages."""

    def __init__(self, broker: "Broker", worker_id: str, stats: Any) -> None:
        self.b = broker
        self.lay = broker.layout
        self.worker_id = worker_id
        self.stats = stats

    async def copy(self, msg: Msg, queue: str, *, reason: str, **info: Any) -> int:
        """Copy ``msg`` to the failed stream with why it failed (original headers and body kept);
        returns the copy's sequence in the failed stream (from the publish acknowledgement)."""
        headers = {k: v for k, v in (msg.headers or {}).items() if k in (HEADER_META, "Naq-Sig")}
        # The copy must fit in one message (a failure's text may quote anything: a malformed header, say).
        reason, info["traceback"] = bounded_failure_text(reason, info.get("traceback") or "", self.b.max_payload)
        fields = {"reason": reason, "failed_at": time.time(), "worker": self.worker_id, "original_headers": headers}
        head = pack_record({**fields, **info}, b"")
        header_bytes = header_size(headers) + 600
        if len(head) + header_bytes > self.b.max_payload:
            # A small max_payload: headers count too, and a message over it makes the server close the
            # connection. The traceback goes first (the failed job's own record keeps its end).
            head = pack_record({**fields, **info, "traceback": ""}, b"")
        extra = len(head) + 2 * header_bytes
        # A body near max_payload would not fit beside its record: it moves to the object store, and a
        # requeue sends the reference (which a worker resolves like any offloaded body).
        original = await payloads.fit_body(self.b, msg.data or b"", job_id_of(headers), extra)
        body = head + original
        headers["Naq-Reason"] = reason.replace("\r", " ").replace("\n", " ")[: min(500, self.b.max_payload // 16)]
        ack = await self.b.js.publish(self.lay.failed_subject(queue), body, headers=headers)
        return ack.seq

    async def reject_malformed(self, msg: Msg, queue: str, exc: Exception) -> None:
        """A message that is not a decodable naq job: to the failed stream, acked, worker goes on."""
        await self.reject(msg, queue, f"malformed message: {exc}")

    async def reject(self, msg: Msg, queue: str, reason: str) -> None:
        """A message no job's records may be written for (malformed, unverified, a copy): to the
        failed stream with ``reason``, acked; the worker goes on."""
        log.warning("moving a message on queue %s to the failed stream: %s", queue, reason)
        # refused: no job of its own (a requeue would purge the real job's result and send this again)
        await self.copy(msg, queue, reason=reason, attempts=1, refused=True)
        await msg.ack()
        self.stats["malformed"] += 1


def job_id_of(headers: dict) -> str:
    """The job id in a (possibly malformed) message's headers, for naming; "unknown" if there is none."""
    try:
        jid = jsontext.loads(headers.get(HEADER_META) or "{}").get("id")
    except (ValueError, AttributeError):
        return "unknown"
    return jid if isinstance(jid, str) and WIRE_ID_RE.fullmatch(jid) else "unknown"
