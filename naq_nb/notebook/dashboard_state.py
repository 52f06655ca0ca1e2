"""What the dashboard knows, and what each record pushed to it changes: workers (heartbeats),
schedules, and jobs (status records: the recent list, each worker's running set and counts since
its heartbeat, finished-per-second rates).

A mixin of :class:`~naq_nb.notebook.dashboard.Dashboard`, which opens the feeds (KV watches,
subscriptions, depth reads) and calls these with each record on naq_nb's loop thread; nothing here
holds a connection. What a redraw shows from this state is built in ``dashboard_rows.py``.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

from nats.js.kv import KV_DEL, KV_PURGE

from ..core.failed import FailedEntry
from ..core.job import JobStatus
from ..core.registry import WorkerRecord, decode_heartbeat
from ..core.status import TERMINAL_VALUES, record_time
from .dashboard_view import RateMeter

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.depths import QueueDepth
    from ..core.schedules import ScheduleRow

__all__ = ["DashboardState"]

log = logging.getLogger("naq_nb.dashboard")

_FINISHED = TERMINAL_VALUES
_JOB_STATES = frozenset(s.value for s in JobStatus if s is not JobStatus.SCHEDULED)  # "scheduled" is a schedule
_RECENT = 500  # jobs kept for the task stream and the recent list
_RECENT_FIELDS = (
    "id",
    "func",
    "name",
    "queue",
    "status",
    "worker",
    "enqueued_at",
    "started_at",
    "finished_at",
    "attempts",
    "error",
    "args",
)
_TIME_FIELDS = ("enqueued_at", "started_at", "finished_at")
_KEY_FIELDS = ("queue", "worker")  # used as dict and counter keys: kept only when strings


class DashboardState:
    """The state half of the dashboard: set up by :meth:`_init_state`, changed on the loop thread only
    (other threads read the dashboard's immutable ``_view``)."""

    client: Client
    _failed_stale: bool

    def _init_state(self, rate_window: float) -> None:
        self.rates = RateMeter(rate_window)
        self._workers: dict[str, WorkerRecord] = {}
        self._schedules: dict[str, ScheduleRow] = {}
        self._failed: list[FailedEntry] = []
        self._failed_total = 0
        self._depths: dict[str, QueueDepth] = {}
        self._known_queues: set[str] = set()
        self._recent: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._running: dict[str, set[str]] = {}  # worker -> job ids running now (pushed)
        self._since_hb: dict[str, collections.Counter] = {}  # worker -> finished since its last heartbeat
        self._finished = 0
        self._samples: collections.deque = collections.deque()  # (t, finished so far, {queue: queued})

    def _apply_worker(self, entry: Any) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._forget_worker(entry.key)
            return
        # decode_heartbeat checks every field, so the rows use a record's fields without checks of their own.
        rec = decode_heartbeat(entry.value)
        if rec is None:
            # Forged or damaged: it names no live worker, and it replaced the key's last heartbeat.
            self._workers.pop(entry.key, None)
            log.warning("dashboard: skipped record %r of the workers bucket: not a worker's heartbeat", entry.key)
            return
        self._workers[entry.key] = rec
        self._known_queues.update(rec["queues"])
        wid = rec.get("id", entry.key)
        self._since_hb[wid] = collections.Counter()  # its stats now count everything finished so far
        running = self._running.setdefault(wid, set())
        for jid in rec["running"]:
            if self._recent.get(jid, {}).get("status") not in _FINISHED:
                running.add(jid)

    def _forget_worker(self, wid: str) -> None:
        self._workers.pop(wid, None)
        self._running.pop(wid, None)
        self._since_hb.pop(wid, None)

    def _forget_gone_workers(self, now: float) -> None:
        """Workers that stopped or died (heartbeat over its TTL) go with their counts: a dashboard
        open for days must not keep every worker id it ever saw. One that beats again comes back."""
        ttl = self.client.settings.worker_ttl
        for wid in [w for w, r in self._workers.items() if now - float(r.get("heartbeat_at") or 0) > ttl]:
            self._forget_worker(wid)
        live = set(self._workers) | {r.get("id") for r in self._workers.values()}
        for wid in [w for w, jobs in self._running.items() if not jobs and w not in live]:
            del self._running[wid]  # (named by a status record only; its jobs ended)
        for wid in [w for w in self._since_hb if w not in live]:
            del self._since_hb[wid]

    def _apply_schedule(self, entry: Any) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._schedules.pop(entry.key, None)
            return
        from ..core.schedules import Schedule

        row = Schedule.decode(entry.value, entry.revision)[0].to_row()
        self._schedules[entry.key] = row
        self._known_queues.add(row["queue"])

    def _apply_status(self, job_id: str, data: bytes) -> bool:
        """A job's status record as pushed (``job_id`` from its key); False if it was no record to use."""
        if not data:
            return False
        try:
            rec = json.loads(data)
            status, queue = rec.get("status"), rec.get("queue")
        except (ValueError, AttributeError):
            return False
        if isinstance(queue, str):
            self._known_queues.add(queue)
            if status in _FINISHED:
                self.rates.add(queue, time.monotonic())
        if status in _JOB_STATES:
            # The key names the job, not the record's "id" field (anyone with write access can put any
            # text there): the id becomes a button, a detail read and a line of HTML.
            self._track_job({**rec, "id": job_id})
        if status == JobStatus.QUEUED.value and rec.get("requeued_from") is not None:
            self._failed_stale = True  # someone requeued a failed job (maybe another client)
        return True

    def _track_job(self, rec: Mapping[str, Any]) -> None:
        """Recent jobs (for the list and the task stream) and each worker's running set."""
        jid, status = rec["id"], rec["status"]
        entry = self._recent.pop(jid, None) or {}
        entry.update({k: rec[k] for k in _RECENT_FIELDS if rec.get(k) is not None})
        # Status records are not checked when read: a forged field must not reach the task stream's
        # arithmetic or the running counts' keys. Such a time or key shows as missing.
        for k in _TIME_FIELDS:
            if k in entry and record_time(entry[k]) is None:
                del entry[k]
        for k in _KEY_FIELDS:
            if k in entry and not isinstance(entry[k], str):
                del entry[k]
        self._recent[jid] = entry
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        worker = entry.get("worker")
        for jobs in self._running.values():
            jobs.discard(jid)
        if status == JobStatus.RUNNING.value and worker:
            self._running.setdefault(worker, set()).add(jid)
        if status in _FINISHED:
            self._finished += 1
            if worker:
                c = self._since_hb.setdefault(worker, collections.Counter())
                c["processed"] += 1
                c["failed"] += status == JobStatus.FAILED.value
