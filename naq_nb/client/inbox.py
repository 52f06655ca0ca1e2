"""Results pushed to the client that enqueued the jobs: a read of a finished job costs no round trip.

A client subscribes once to its own reply subjects (``Layout.reply_inbox``) and
marks the jobs it enqueues one by one with its token. A worker that has *stored*
a job's result (its create-only write acknowledged) publishes the same sealed
record there; every other writer of a result (a cancel, a failed dependency, a
run that finds an earlier result standing) an empty notice: "read it". The
client keeps each record until it is read, or hands it to a read already
waiting for it. The bucket stays the truth:

* a push only spares a read; a read with nothing pushed reads the bucket as
  before (the job came from an older worker, the push was lost on a reconnect,
  the record was evicted, or another process enqueued the job);
* what is kept is bounded (:data:`MAX_RECORDS`, :data:`MAX_BYTES`), oldest out
  first, and each record is handed out once (a second read reads the bucket);
* a pushed record is checked like a read one (its seal, when signing is on);
* a result pushed early (while its writes are in flight, by a worker that had
  the job to itself) is kept apart, unread, until the acknowledgements of both
  writes by the same writer, copied here, prove it stored; only then is it
  handed out as a pushed one. Without that proof it never is: a read of it
  waits, then reads the bucket as for a lost push;
* a read of a job marked here and not pushed yet (:meth:`ResultInbox.expects`)
  waits for the push, with no subscription of its own for half a second,
  instead of reading the bucket while the job runs; then it waits as any read
  does (a subscription on the result key), for a push that was lost.

A client listens on the background loop's connection, and on the connection
an async caller's loop has of its own (``Client.broker_here``) under another
token: a job such a loop sends on it is pushed there, so an ``await`` of its
result on that loop needs no thread hop. Only a read on that loop waits for such a
push: a blocking read on that loop's thread holds the loop that would receive it.

Thread-safe: pushes arrive on either loop; reads wait on any loop.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..core.inbound import subscribe_inline
from ..core.layout import EARLY_MARK

if TYPE_CHECKING:
    from ..core.broker import Broker

__all__ = ["ResultInbox", "MAX_RECORDS", "MAX_BYTES"]

#: Pushed records kept unread per client, at most (the oldest go first; a read then uses the bucket).
MAX_RECORDS = 10_000
#: ... and at most this many bytes of them.
MAX_BYTES = 32 * 1024 * 1024
#: Runs of one job whose early pushes are kept apart, unproven, at most (the oldest go first).
MAX_EARLY_RUNS = 4


class ResultInbox:
    """One client's pushed results: kept until read, or handed to a waiting read."""

    def __init__(self, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES) -> None:
        self.token = secrets.token_hex(8) + EARLY_MARK  # it takes early pushes
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._records: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}
        # Marked with one of our tokens, not pushed yet: job id -> the loop its push arrives on
        # (None: the background loop, whose connection reads whatever the caller's thread does).
        self._expected: OrderedDict[str, asyncio.AbstractEventLoop | None] = OrderedDict()
        self._subscribed_on: "Broker | None" = None
        self._unwanted: OrderedDict[str, None] = OrderedDict()  # read before their push came
        self._here: "weakref.WeakKeyDictionary[Broker, str]" = weakref.WeakKeyDictionary()  # caller loops' tokens
        # Pushed early, not proven stored yet: job id -> {run: [record or None, acknowledgements seen]}.
        self._unproven: OrderedDict[str, dict[str, list]] = OrderedDict()
        self._unproven_bytes = 0
        self._layout: Any = None  # parses the subjects pushed to (the connections' Layout)

    @property
    def open(self) -> bool:
        """Subscribed on a live connection: jobs may be marked with :attr:`token`."""
        b = self._subscribed_on
        return b is not None and not b.nc.is_closed

    async def subscribe(self, broker: "Broker") -> None:
        """Listen on ``broker``'s connection (once per connection; the client's loop only)."""
        if self._subscribed_on is broker:
            return
        self._layout = broker.layout
        await subscribe_inline(broker.nc, broker.layout.reply_inbox(self.token), self._on_msg)  # ends with it
        self._subscribed_on = broker
        broker.on_reconnect(functools.partial(self._reconnected, None))

    async def subscribe_here(self, broker: "Broker") -> None:
        """Listen on a caller loop's own connection, under a token of its own (on that loop)."""
        token = secrets.token_hex(8) + EARLY_MARK
        self._layout = broker.layout
        await subscribe_inline(broker.nc, broker.layout.reply_inbox(token), self._on_msg)
        self._here[broker] = token
        broker.on_reconnect(functools.partial(self._reconnected, asyncio.get_running_loop()))

    async def _reconnected(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """That loop's connection was lost and is back: pushes sent meanwhile are gone, so the jobs
        still expected there are read from the bucket, without waiting for a push first."""
        self.expect_none(loop)

    def expect_none(self, loop: asyncio.AbstractEventLoop | None = None, *, every: bool = False) -> None:
        """No push will come for the jobs expected on ``loop``'s connection (or, ``every``, on any):
        it was lost or closed. (Their entries also kept that loop alive.)"""
        with self._lock:
            for job_id in [j for j, lp in self._expected.items() if every or lp is loop]:
                del self._expected[job_id]

    def token_here(self, broker: "Broker") -> str | None:
        """The token of a caller loop's connection, while it is up."""
        token = self._here.get(broker)
        return token if token is not None and broker.nc.is_connected else None

    def _on_msg(self, msg: Any) -> None:
        parts = self._layout.reply_parts(msg.subject)
        if parts is None:
            return
        job_id, kind, run = parts
        if not kind:
            self.deliver(job_id, msg.data)
        elif kind == "v":
            self._early(job_id, run, msg.data, "")
        elif _stored(msg):
            self._early(job_id, run, None, kind)

    def _early(self, job_id: str, run: str, data: bytes | None, kind: str) -> None:
        """A part of an early push of commit ``run``: the record, or one write's acknowledgement
        (``s``, ``r``). With the record and both from one run, it is handed out as a stored one.
        Each run is kept apart: two runs of one job may each push theirs (only one result write
        can succeed), and a run whose writes never landed leaves its parts behind."""
        with self._lock:
            runs = self._unproven.pop(job_id, None) or {}
            entry = runs.pop(run, None) or [None, ""]
            self._unproven_bytes -= len(entry[0] or b"")
            if data is not None:
                entry[0] = data
            entry[1] += kind
            record = entry[0]
            if record is not None and "s" in entry[1] and "r" in entry[1]:
                self._unproven_bytes -= _held(runs)  # the job's other runs go with it
            else:
                runs[run] = entry
                self._unproven_bytes += len(record or b"")
                while len(runs) > MAX_EARLY_RUNS:
                    self._unproven_bytes -= len(runs.pop(next(iter(runs)))[0] or b"")
                self._unproven[job_id] = runs  # (as the newest)
                while self._unproven and (
                    len(self._unproven) > self.max_records or self._unproven_bytes > self.max_bytes
                ):
                    self._unproven_bytes -= _held(self._unproven.popitem(last=False)[1])
                return
        self.deliver(job_id, record)

    def expect(self, job_id: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``job_id`` is marked with a token of ours: its worker will push its result here, on
        ``loop``'s connection (None: the background loop's)."""
        with self._lock:
            self._expected[job_id] = loop
            while len(self._expected) > self.max_records:
                self._expected.popitem(last=False)

    def unexpect(self, job_id: str) -> None:
        """No push will come for ``job_id`` (its enqueue failed, or it was a duplicate not sent)."""
        with self._lock:
            self._expected.pop(job_id, None)

    def expects(self, job_id: str) -> bool:
        """Marked here and neither pushed nor read yet, and its push arrives whatever the running
        loop does: a read may wait for the push. A push to a caller loop's connection is waited
        for on that loop only (a blocking read there holds up the loop that would receive it)."""
        with self._lock:
            if job_id not in self._expected:
                return False
            loop = self._expected[job_id]
        return loop is None or loop is asyncio.get_running_loop()

    def deliver(self, job_id: str, data: bytes) -> None:
        """A pushed record: to the reads waiting for it, else kept for the next one."""
        with self._lock:
            self._expected.pop(job_id, None)
            early = self._unproven.pop(job_id, None)  # superseded: this one is stored
            if early is not None:
                self._unproven_bytes -= _held(early)
            waiters = self._waiters.pop(job_id, None)
            if not waiters:
                if self._unwanted.pop(job_id, 0) is None:
                    return  # read already
                self._keep(job_id, data)
                return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for fut in waiters:
            loop = fut.get_loop()
            if loop is here:  # pushed on the reader's own loop: no wake-up to send
                _resolve(fut, data)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut, data)

    def _keep(self, job_id: str, data: bytes) -> None:
        old = self._records.pop(job_id, None)
        if old is not None:
            self._bytes -= len(old)
        self._records[job_id] = data
        self._bytes += len(data)
        while self._records and (len(self._records) > self.max_records or self._bytes > self.max_bytes):
            _, dropped = self._records.popitem(last=False)
            self._bytes -= len(dropped)

    def take(self, job_id: str) -> bytes | None:
        """The pushed record of ``job_id`` if one is kept (handed out once)."""
        with self._lock:
            data = self._records.pop(job_id, None)
            if data is not None:
                self._bytes -= len(data)
            return data

    def wait(self, job_id: str) -> "asyncio.Future[bytes]":
        """A future of the running loop, resolved with ``job_id``'s record when it is pushed (or at
        once if it was). Pass it to :meth:`forget` when done with it."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        with self._lock:
            data = self._records.pop(job_id, None)
            if data is None:
                self._waiters.setdefault(job_id, []).append(fut)
                return fut
            self._bytes -= len(data)
        fut.set_result(data)
        return fut

    def forget(self, job_id: str, fut: "asyncio.Future[bytes]", *, read: bool = False) -> None:
        """A read of ``job_id`` is over: drop its wait, and the push expected (a next read reads).
        ``read``: it returned the result, read from the bucket before the push came (a blocking read
        on the loop that receives it): that push is dropped when it comes, not kept unread."""
        with self._lock:
            if job_id in self._expected and read:
                self._unwanted[job_id] = None
                while len(self._unwanted) > self.max_records:
                    self._unwanted.popitem(last=False)
            self._expected.pop(job_id, None)
            waiters = self._waiters.get(job_id)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[job_id]
        if not fut.done():
            fut.cancel()

    def __len__(self) -> int:
        return len(self._records)


def _resolve(fut: "asyncio.Future[bytes]", data: bytes) -> None:
    if not fut.done():
        fut.set_result(data)


def _stored(msg: Any) -> bool:
    """A copied JetStream acknowledgement that says the write is stored (not an error, nor the
    "no stream" status a publish nothing stores gets)."""
    data = msg.data
    return not msg.headers and data[:1] == b"{" and b'"seq"' in data and b'"error"' not in data


def _held(runs: dict[str, list]) -> int:
    """Bytes of the early records kept for one job's runs."""
    return sum(len(entry[0] or b"") for entry in runs.values())
