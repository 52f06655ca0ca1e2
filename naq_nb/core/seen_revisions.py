"""The newest record revision a scheduler applied, per schedule, kept only while it matters.

A schedule's records reach the scheduler three ways: the scan that loads the calendar, its KV watch,
and its own writes (applied at once, before the watch brings them back). A record older than one
already applied is stale and skipped, so the revision applied is kept per schedule id. For a
schedule no longer in the calendar (deleted: cancelled, a one-shot that fired, an unreadable record)
it matters only until the watch has passed that revision: revisions are the bucket stream's
sequence numbers and the watch delivers in stream order, so no older record of it can come after.
Kept for ever, every schedule ever seen (each ``enqueue_in`` / ``enqueue_at`` is one) left an entry
behind, and a scheduler running for days grew by one per delayed job.
"""

from __future__ import annotations

import heapq

__all__ = ["SeenRevisions"]


class SeenRevisions:
    """Schedule id -> the newest revision applied; a deleted one's forgotten once the watch passed it."""

    def __init__(self) -> None:
        self._rev: dict[str, int] = {}
        self._gone: list[tuple[int, str]] = []  # (revision, id) of schedules out of the calendar: a heap

    def get(self, sid: str) -> int:
        """The newest revision applied for ``sid`` (0: none, or forgotten as no longer needed)."""
        return self._rev.get(sid, 0)

    def seen(self, sid: str, revision: int) -> None:
        """A record of ``sid`` at ``revision`` is in the calendar."""
        self._rev[sid] = revision

    def gone(self, sid: str, revision: int) -> None:
        """``sid`` left the calendar at ``revision``: kept until the watch passes it."""
        self._rev[sid] = revision
        heapq.heappush(self._gone, (revision, sid))

    def watched(self, revision: int) -> None:
        """The watch delivered ``revision``: schedules gone at or before it are forgotten (one that
        came back since, at a newer revision, is kept)."""
        gone = self._gone
        while gone and gone[0][0] <= revision:
            rev, sid = heapq.heappop(gone)
            if self._rev.get(sid) == rev:
                del self._rev[sid]

    def clear(self) -> None:
        self._rev.clear()
        self._gone.clear()

    def __len__(self) -> int:
        return len(self._rev)
