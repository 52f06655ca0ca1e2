"""Enqueues not yet acknowledged: what a client has handed to its loop and not heard back about.

A plain ``enqueue`` returns as soon as its job is encoded and handed to the
background loop, which publishes it and waits for JetStream's acknowledgements
(see ``Client.enqueue_jobs``). Nothing may fail silently, so this ledger keeps,
per client, each job in flight and each failure:

* the job's own reads (``fetch_job_result(job)``, ``status``) wait for its
  store first and raise :class:`JobNotStoredError` if it failed;
* the client's next enqueue, ``flush()`` and ``close()`` raise the failures
  not reported yet (each once);
* at most :data:`WINDOW` jobs are in flight: the next enqueue waits for the oldest.

Thread-safe: callers run in any thread, the acknowledgements arrive on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import OrderedDict
from typing import Iterable

from ..core.errors import JobNotStoredError

__all__ = ["Stores", "WINDOW"]

#: Unacknowledged enqueues a client allows before the next one waits.
WINDOW = 1000
_KEEP_FAILED = 10_000  # failed ids (and stored ids' sequences) remembered for their handles


class Stores:
    """The in-flight and failed enqueues of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, concurrent.futures.Future] = OrderedDict()
        self._failed: OrderedDict[str, JobNotStoredError] = OrderedDict()
        self._unreported: list[JobNotStoredError] = []
        self._seqs: OrderedDict[str, int] = OrderedDict()  # stream sequences of recent stores, for cancel
        self._unrecorded: OrderedDict[str, None] = OrderedDict()  # stored without their queued record

    def begin(self, job_id: str) -> concurrent.futures.Future:
        """A job handed to the loop: its future resolves when it is stored (or fails)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        # Running, so not cancellable: a reader that gives up (a timeout, Ctrl-C) cancels only its own
        # wait (asyncio.wrap_future would otherwise cancel the store itself for every other reader).
        fut.set_running_or_notify_cancel()
        with self._lock:
            self._pending[job_id] = fut
        return fut

    def stored(
        self, job_id: str, fut: concurrent.futures.Future, seq: int | None = None, unrecorded: bool = False
    ) -> None:
        with self._lock:
            self._pending.pop(job_id, None)
            self._keep_seq(job_id, seq)
        if unrecorded:
            self.mark_unrecorded([(job_id, seq)])
        fut.set_result(None)

    def _keep_seq(self, job_id: str, seq: int | None) -> None:
        if seq is not None:
            self._seqs[job_id] = seq
            while len(self._seqs) > _KEEP_FAILED:
                self._seqs.popitem(last=False)

    def mark_unrecorded(self, stored: Iterable[tuple[str, int | None]]) -> None:
        """Jobs this client stored (id, stream sequence) whose queued record was not stored: a reader
        waits for such a job while its message is queued, so the sequence must be kept with it."""
        stored = list(stored)
        if not stored:
            return
        with self._lock:
            for job_id, seq in stored:
                self._unrecorded[job_id] = None
                self._keep_seq(job_id, seq)
            while len(self._unrecorded) > _KEEP_FAILED:
                self._unrecorded.popitem(last=False)

    def unrecorded_seq(self, job_id: str) -> int | None:
        """The stream sequence of ``job_id`` if this client stored it without its queued record (a
        missing status record then means "not started yet", not "no such job"), else None."""
        if not self._unrecorded:  # (the usual case, read without the lock)
            return None
        with self._lock:
            return self._seqs.get(job_id) if job_id in self._unrecorded else None

    def sequence(self, job_id: str) -> int | None:
        """The stream sequence of a job this client stored recently (a cancel deletes the message)."""
        with self._lock:
            return self._seqs.get(job_id)

    def failed(self, job_id: str, fut: concurrent.futures.Future, err: JobNotStoredError) -> None:
        with self._lock:
            self._pending.pop(job_id, None)
            self._failed[job_id] = err
            while len(self._failed) > _KEEP_FAILED:
                self._failed.popitem(last=False)
            self._unreported.append(err)
        fut.set_exception(err)

    def reported(self, job_ids: list[str], err: JobNotStoredError) -> None:
        """Jobs an acknowledged enqueue (``enqueue_many``) did not store and raised ``err`` for itself:
        their reads raise it too; the client's next call does not raise it again."""
        with self._lock:
            for job_id in job_ids:
                self._failed[job_id] = err
            while len(self._failed) > _KEEP_FAILED:
                self._failed.popitem(last=False)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def oldest_if_full(self) -> concurrent.futures.Future | None:
        """The oldest job in flight when the window is full, else None."""
        with self._lock:
            if len(self._pending) < WINDOW:
                return None
            return next(iter(self._pending.values()))

    def all_pending(self) -> list[concurrent.futures.Future]:
        with self._lock:
            return list(self._pending.values())

    def raise_unreported(self) -> None:
        """Raise the first failure not reported yet (saying how many more there were); each once."""
        with self._lock:
            errs, self._unreported = self._unreported, []
        if not errs:
            return
        first = errs[0]
        if len(errs) == 1:
            raise first
        raise JobNotStoredError(f"{len(errs)} enqueued jobs were not stored; the first: {first}") from first

    def check(self, job_id: str) -> concurrent.futures.Future | None:
        """For a read of ``job_id``: its store's future while in flight; raises if it failed."""
        with self._lock:
            err = self._failed.get(job_id)
            fut = self._pending.get(job_id)
        if err is not None:  # raised on every read: without the last read's traceback, it does not grow
            raise err.with_traceback(None)
        return fut

    async def settled(self, job_id: str) -> None:
        """Wait until ``job_id``'s store (if this client has one in flight) is done; raise if it failed."""
        fut = self.check(job_id)
        if fut is not None:
            await asyncio.wrap_future(fut)

    def any_pending(self, job_ids: Iterable[str]) -> bool:
        """Whether any of ``job_ids`` has a store in flight."""
        with self._lock:
            return any(j in self._pending for j in job_ids)

    async def wait_quietly(self, job_ids: Iterable[str]) -> None:
        """Wait until none of ``job_ids`` has a store in flight; a failure stays for its own reads."""
        with self._lock:
            futs = [self._pending[j] for j in job_ids if j in self._pending]
        if futs:
            done, _ = await asyncio.wait([asyncio.wrap_future(f) for f in futs])
            for f in done:
                f.exception()  # retrieved, so not logged as never retrieved

    async def drain(self) -> None:
        """Wait until every job in flight now is stored or failed (each within the publish timeout)."""
        for fut in self.all_pending():
            try:
                await asyncio.wrap_future(fut)
            except JobNotStoredError:
                pass  # kept in the unreported list: the caller raises it
