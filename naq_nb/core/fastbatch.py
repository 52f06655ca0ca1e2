"""Fast-ingest batch publishing (nats-server 2.14+, ``allow_batched``): many messages to one stream,
each stored as it arrives, acknowledged every :data:`FLOW` messages instead of one by one.

``enqueue_many`` publishes a chunk of jobs as two such batches side by side, on one connection:
the ``queued`` records to the status bucket's stream and the jobs to the jobs stream, each job's
record just before the job (as the per-job path does). Receiving one JetStream acknowledgement per
message is what bounds a Python client; here a chunk costs a few dozen.

The whole protocol lives in the reply subject of each message
(``<inbox>.<flow>.fail.<batch seq>.<op>.$FI``, the inbox's last token being the batch id); the
server answers on that inbox with flow acks (``{"type": "ack", "seq": N}``), errors
(``{"type": "err"|"gap", ...}``: the batch is abandoned there) and one terminal frame: the batch's
ack (``count`` = messages taken, duplicates included) or ``{"error": ...}``. Nothing is trusted
beyond what a terminal ack counts: :meth:`FastBatch.result` says how many of the first messages are
stored, the caller reports the rest as not stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from .errors import PublishTimeoutError

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["FastBatch", "FLOW", "AHEAD"]

log = logging.getLogger("naq_nb.client")

#: The server acknowledges every this many messages of a batch.
FLOW = 100
#: Unacknowledged flow windows a batch may run ahead by before its publisher waits (1,600 messages:
#: 4 windows left the sender waiting on acks about 5 % of the time, bench/RESULTS.md; what is ahead
#: is what a lost connection leaves in doubt, named as such).
AHEAD = 16
_START, _ADD, _COMMIT, _END = 0, 1, 2, 3
_BATCHING_DISABLED = 10205  # the stream does not allow batched publishes (any more): each message refused


class FastBatch:
    """One fast-ingest batch to one stream. :meth:`open`, :meth:`add` each message (the last one with
    ``last=True``), then :meth:`result`; :meth:`close` in a ``finally``."""

    def __init__(self, broker: "Broker", what: str) -> None:
        self.b, self.what = broker, what
        self.inbox = broker.nc.new_inbox()
        self.sent = 0
        self.acked = 0  # stored through this batch sequence (flow acks)
        self.problem: str | None = None  # the first err / gap / error frame: the batch ends there
        self.count: int | None = None  # the terminal ack's count
        self.refused: set[int] = set()  # batch sequences refused one by one: the stream stopped batching
        self._closed = False  # the last message (a commit) or an end marker was sent
        self.lost = False  # the connection dropped or closed while the batch was under way
        self._sub: Any = None
        self._news = asyncio.Event()
        self._subject = ""

    async def open(self) -> None:
        self._sub = await self.b.nc.subscribe(self.inbox + ".>", cb=self._on_frame)
        self.b.open_batches.add(self)

    def lose(self, why: str) -> None:
        """The connection ``why`` ("dropped", "closed"): the batch ends here, and what its flow acks did
        not confirm is in doubt. Its waits end now, not at the publish timeout (a frame sent before
        the loss may still come, and is counted). On the loop."""
        self.lost = True
        self.problem = self.problem or f"the connection {why} before the server ended the batch"
        self._news.set()

    @property
    def ended(self) -> bool:
        """The server has reported a problem or ended the batch: send nothing more."""
        return self.count is not None or self.problem is not None

    @property
    def disabled(self) -> bool:
        """The stream refuses batched publishes (``allow_batched`` was turned off after connect)."""
        return bool(self.refused)

    def _settled(self) -> bool:
        # A stream that stopped batching answers no count: settled once every message after the
        # acknowledged ones was refused (one that was not may be stored: then only a timeout ends it).
        if self.count is not None:
            return True
        return self.disabled and len({s for s in self.refused if self.acked < s <= self.sent}) == self.sent - self.acked

    async def add(self, subject: str, payload: bytes, headers: dict | None = None, *, last: bool = False) -> None:
        self.sent += 1
        op = _COMMIT if last else (_START if self.sent == 1 else _ADD)
        await self.b.send(subject, payload, self._reply(self.sent, op), headers)
        self._subject = subject
        self._closed = last

    async def end(self) -> None:
        """End a batch whose last message was not sent (it, or the other one of a pair, met a problem):
        an end-of-batch marker, which the server stores as nothing and answers with the batch's count."""
        if self.sent and not self._closed and self.count is None:
            self._closed = True
            await self.b.send(self._subject, b"", self._reply(self.sent + 1, _END))

    def _reply(self, seq: int, op: int) -> str:
        return f"{self.inbox}.{FLOW}.fail.{seq}.{op}.$FI"

    async def keep_pace(self) -> None:
        """Wait while this batch runs more than :data:`AHEAD` flow windows ahead of its acks."""
        deadline = asyncio.get_running_loop().time() + self.b.publish_timeout
        while self.sent - self.acked > FLOW * AHEAD and not self.ended:
            await self._wait(deadline)

    async def result(self, deadline: float | None = None) -> tuple[int, bool]:
        """``(stored, exact)``: how many of the first messages are stored, and whether that is the
        server's count (True) or only what its flow acks confirmed, the rest being in doubt (False).
        After a problem the batch's count is what says where the stored part ends: nothing is inferred
        from the problem frame itself. Waited for until ``deadline`` (loop time; default: the publish
        timeout from now), so batches sent side by side share one bound."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.b.publish_timeout
        try:
            while not self._settled() and not self.lost:
                await self._wait(deadline)
        except PublishTimeoutError:
            if self.problem is None:
                raise
        if self.problem is not None:
            log.warning("%s: the server ended the batch: %s", self.what, self.problem)
        if self.count is None:
            return self.acked, self._settled()  # refused one by one after the acked ones: exact
        return min(self.count, self.sent), True

    async def close(self) -> None:
        self.b.open_batches.discard(self)
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closed or reconnecting: the subscription goes with it
                log.debug("%s: cannot unsubscribe: %s", self.what, exc)

    async def _wait(self, deadline: float) -> None:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise PublishTimeoutError(
                f"{self.what}: {self.sent - self.acked:,} messages not acknowledged within "
                f"{self.b.publish_timeout:g}s (they may or may not be stored)"
            )
        self._news.clear()
        try:
            await asyncio.wait_for(self._news.wait(), left)
        except asyncio.TimeoutError:
            pass  # raised above on the next turn

    async def _on_frame(self, msg: Any) -> None:
        try:
            frame = json.loads(msg.data)
        except ValueError:
            frame = {"error": {"description": f"unreadable frame {msg.data[:80]!r}"}}
        kind = frame.get("type") if isinstance(frame, dict) else "?"
        if kind == "ack":
            self.acked = max(self.acked, int(frame.get("seq") or 0))
        elif kind is None and "batch" in frame and "count" in frame and "error" not in frame:
            self.count = int(frame["count"])  # the batch's end: its first `count` messages are stored
            if self.count == self.sent:
                self.acked = self.sent
        elif isinstance(frame, dict) and _err_code(frame) == _BATCHING_DISABLED:
            self.refused.add(_batch_seq(msg.subject))
            self.problem = self.problem or json.dumps(frame)[:300]
        elif self.problem is None:
            # err / gap frames, a failed batch, or a plain PubAck (a server that does not batch after
            # all: its messages are then in doubt, and reported so)
            self.problem = json.dumps(frame)[:300]
        self._news.set()


def _err_code(frame: dict) -> Any:
    err = frame.get("error")
    return err.get("err_code") if isinstance(err, dict) else None


def _batch_seq(subject: str) -> int:
    """The batch sequence in a reply subject (``<inbox>.<flow>.fail.<seq>.<op>.$FI``); 0 if none."""
    parts = subject.split(".")
    try:
        return int(parts[-3]) if len(parts) >= 3 else 0
    except ValueError:
        return 0
