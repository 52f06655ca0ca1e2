"""The rows of the dashboard's view (workers, queues, recent jobs, schedules, failed jobs, charts),
built from the state the feeds of :class:`~naq_nb.notebook.dashboard.Dashboard` keep.

A mixin of that class: the feeds (KV watches, subscriptions, depth ticks) live in ``dashboard.py``,
what each record they push changes in ``dashboard_state.py``, what a redraw shows here.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from ..core.failed import FailedEntry
from ..core.registry import WorkerRecord
from ..core.status import record_time, text_or_none
from .dashboard_view import RateMeter, format_age, format_every, format_when
from .fmt import duration_text

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.depths import QueueDepth
    from ..core.schedules import ScheduleRow

__all__ = ["DashboardRows"]


class DashboardRows:
    """The view-building half of the dashboard; every field below is set by ``Dashboard.__init__``, those
    the feeds keep by ``DashboardState._init_state`` (``dashboard_state.py``)."""

    client: Client
    history: float
    max_rows: int
    rates: RateMeter
    _workers: dict[str, WorkerRecord]
    _schedules: dict[str, ScheduleRow]
    _failed: list[FailedEntry]
    _failed_total: int
    _depths: dict[str, QueueDepth]
    _known_queues: set[str]
    _recent: collections.OrderedDict[str, dict]
    _running: dict[str, set[str]]
    _since_hb: dict[str, collections.Counter]
    _samples: collections.deque
    _detail: str
    _message: str
    _state: str
    _closed: bool

    # --- views -----------------------------------------------------------------------------------
    def _worker_rows(self, now: float) -> list[dict]:
        ttl = self.client.settings.worker_ttl
        rows: list[dict[str, Any]] = []
        for wid, r in sorted(self._workers.items()):
            age = max(0.0, now - float(r.get("heartbeat_at") or 0))
            if age > ttl:
                continue  # died without removing its record; the bucket TTL will drop it
            name = r.get("id", wid)
            stats: dict[str, int] = r.get("stats") or {}
            extra: dict[str, int] = self._since_hb.get(name) or {}
            slots = int(r.get("concurrency") or 1)
            busy = len(self._running.get(name, ()))
            rows.append(
                {
                    "worker_id": name,
                    "host": r.get("host"),
                    "state": "busy" if busy else "idle",
                    "load": f"{min(busy, slots)}/{slots}",
                    "running_n": busy,
                    "concurrency": slots,
                    "processed": int(stats.get("processed", 0)) + extra.get("processed", 0),
                    "failed": int(stats.get("failed", 0)) + extra.get("failed", 0),
                    "heartbeat_age": format_age(age),
                }
            )
        return rows

    def _series(self) -> tuple[dict, dict]:
        samples = list(self._samples)
        throughput = {
            "finished": [
                (t1, max(0.0, (n1 - n0) / max(1e-6, t1 - t0))) for (t0, n0, _), (t1, n1, _) in zip(samples, samples[1:])
            ]
        }
        queues = sorted({q for _, _, d in samples for q in d})
        depth = {q: [(t, d.get(q, 0)) for t, _, d in samples] for q in queues}
        return throughput, depth

    def _recent_rows(self, now: float) -> list[dict]:
        rows: list[dict[str, Any]] = []
        for jid, j in reversed(self._recent.items()):
            if len(rows) >= self.max_rows:
                break
            start, end = record_time(j.get("started_at")), record_time(j.get("finished_at"))
            dur = (now if end is None else end) - start if start is not None else None
            rows.append(
                {
                    "job_id": jid,
                    "function": text_or_none(j.get("name") or j.get("func")),
                    "queue": text_or_none(j.get("queue")),
                    "status": text_or_none(j.get("status")),
                    "duration": duration_text(dur),
                    "worker": text_or_none(j.get("worker")) or "-",
                }
            )
        return rows

    def _queue_rows(self) -> list[dict]:
        # Waiting = in the stream and not running: a job a worker only buffered still waits.
        rates = self.rates.rates(time.monotonic())
        served = collections.Counter(q for r in self._workers.values() for q in r.get("queues") or ())
        running = self._running_per_queue()
        total = {q: d["total"] for q, d in self._depths.items()}
        return [
            {
                "queue": q,
                "queued": max(0, total.get(q, 0) - running.get(q, 0)),
                "running": running.get(q, 0),
                "workers": served.get(q, 0),
                "finished_per_s": f"{rates.get(q, 0.0):.1f}",
            }
            for q in sorted(self._known_queues)
        ]

    def _build_view(self, now: float) -> dict:
        workers = self._worker_rows(now)
        rows = sorted(self._schedules.values(), key=lambda s: (s.get("next_run") is None, s.get("next_run") or 0))
        schedules = [
            {
                "schedule_id": s["schedule_id"],
                "function": s.get("function"),
                "every": format_every(s),
                "next_run": format_when(s.get("next_run"), now),
                "runs": f"{s.get('runs', 0)}/{s['repeat']}" if s.get("repeat") else str(s.get("runs", 0)),
                "paused": "yes" if s.get("paused") else "no",
                "failing": _failing(s),
                "_paused": bool(s.get("paused")),
            }
            for s in rows[: self.max_rows]
        ]
        failed = [  # (list_failed gives every field its type, whatever a dead letter held)
            {
                "job_id": f.get("job_id") or "",
                "function": f.get("func"),
                "error": (f.get("error") or "")[:120],
                "attempts": f.get("attempts"),
                "_key": f.get("job_id") or f"seq:{f['seq']}",
                "_seq": f["seq"],
                "_requeueable": bool(f.get("requeueable")),
            }
            for f in self._failed
        ]
        throughput, depth = self._series()
        lanes = [w["worker_id"] for w in workers]
        stream = [j for j in self._recent.values() if j.get("worker") in lanes]
        return {
            "url": self.client.url,
            "updated_at": now,
            "closed": self._closed,
            "state": self._state,
            "queues": self._queue_rows(),
            "workers": workers,
            "recent": self._recent_rows(now),
            "schedules": schedules,
            "schedules_total": len(rows),
            "failed": failed,
            "failed_total": self._failed_total,
            "failed_more": max(0, self._failed_total - len(failed)),
            "message": self._message,
            "throughput": throughput,
            "depth": depth,
            "span": self.history,
            "stream": stream,
            "lanes": lanes,
            "detail": self._detail,
        }

    def _running_per_queue(self) -> collections.Counter:
        return collections.Counter(
            self._recent.get(j, {}).get("queue") for jobs in self._running.values() for j in jobs
        )


def _failing(s: ScheduleRow) -> str:
    """A schedule whose fires keep failing (the scheduler backs off): how many in a row, and why."""
    n = s.get("failures") or 0
    return f"{n}x: {(s.get('last_error') or '')[:100]}" if n else ""
