"""``nq.dashboard()``: one live view of queues, workers, schedules and failed jobs.

The data arrives by push wherever NATS pushes:

* workers and schedules: a KV watch on each bucket (the current records first,
  then every put or delete as it happens);
* job status changes: one core subscription on the status bucket's subjects,
  which feeds the finished-per-second rates and notices requeues;
* failed jobs: a core subscription on the failed stream's subjects; the list is
  re-read from the stream (at most once per redraw) when something lands there.

Only queue depths (stream info) are read periodically, every ``refresh``
seconds; the same tick ages heartbeats and rates. Everything runs on naq_nb's
background loop; redraws are throttled to ``updates_per_second`` and only
touch widget traits (never ``print``), so they are safe from that thread.
Buttons act through the client: Pause/Resume per schedule, Requeue per failed
job. ``.close()`` stops the watches; the last view stays readable, and
``text/plain`` / ``text/html`` renderings of it are saved with the notebook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from nats.js.kv import KV_DEL, KV_PURGE

from ..client.client import Client
from ..client.loop import get_loop_thread, on_exit, run_async, run_sync
from ..client.session import default_client
from ..core.job import JobStatus
from .dashboard_view import (
    DashboardWidgets, RateMeter, format_age, format_every, format_when, render_html, render_text,
)

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["Dashboard", "dashboard", "dashboard_async"]

log = logging.getLogger("naq_nb.dashboard")

_FINISHED = frozenset({JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})
_START_TIMEOUT = 15.0



# --- the dashboard -----------------------------------------------------------------------------
def _check_args(client: Any, refresh: Any, updates_per_second: Any, max_rows: Any, rate_window: Any) -> None:
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"dashboard(client=...) needs a naq_nb Client or None, not {type(client).__name__}")
    for name, value, low in (("refresh", refresh, 0.2), ("rate_window", rate_window, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < low:
            raise ValueError(f"dashboard({name}=...) must be seconds >= {low:g}, not {value!r}")
    if isinstance(updates_per_second, bool) or not isinstance(updates_per_second, (int, float)) \
            or not 0 < updates_per_second <= 30:
        raise ValueError(f"dashboard(updates_per_second=...) must be in (0, 30], not {updates_per_second!r}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"dashboard(max_rows=...) must be an int >= 1, not {max_rows!r}")


class Dashboard:
    """A live ipywidgets view of one NATS deployment; see the module docstring.

    Made and started by :func:`dashboard`. Display it (last expression of a
    cell) for the live widget; ``to_text()`` / ``to_html()`` / ``state()`` give
    the current view without widgets.
    """

    def __init__(self, client: Client | None = None, refresh: float = 2.0, *, updates_per_second: float = 4.0,
                 max_rows: int = 20, rate_window: float = 10.0) -> None:
        _check_args(client, refresh, updates_per_second, max_rows, rate_window)
        self.client = client or default_client()
        self.refresh = float(refresh)
        self.min_interval = 1.0 / updates_per_second
        self.max_rows = max_rows
        self.rates = RateMeter(rate_window)
        # Mutated on naq_nb's loop thread only; other threads read the immutable `_view`.
        self._workers: dict[str, dict] = {}
        self._schedules: dict[str, dict] = {}
        self._failed: list[dict] = []
        self._failed_total = 0
        self._depths: dict[str, int] = {}
        self._known_queues: set[str] = set()
        self._message = ""
        self._failed_stale = False
        self._dirty: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._watchers: list[Any] = []
        self._subs: list[Any] = []
        self._broker: Any = None
        self._closed = False
        self._started = False
        self._view: dict = {"url": self.client.url, "updated_at": time.time(), "closed": False}
        self._ui = DashboardWidgets(self)

    # --- public -------------------------------------------------------------------------
    @property
    def widget(self) -> "ipywidgets.VBox":
        """The root widget (a VBox)."""
        return self._ui.root

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def requeue_buttons(self) -> dict[str, "ipywidgets.Button"]:
        """The Requeue button of each failed job shown, by job id (or ``seq:<n>`` without one)."""
        return self._ui.row_buttons("failed")

    @property
    def schedule_buttons(self) -> dict[str, "ipywidgets.Button"]:
        """The Pause/Resume button of each schedule shown, by schedule id."""
        return self._ui.row_buttons("schedules")

    def state(self) -> dict:
        """The current view: queues, workers, schedules, failed (lists of dicts), failed_total, message."""
        return dict(self._view)

    def to_text(self) -> str:
        """The current view as plain text."""
        return render_text(self._view)

    def to_html(self) -> str:
        """The current view as HTML tables (no widgets)."""
        return render_html(self._view)

    def start(self) -> "Dashboard":
        """Open the watches and draw the first view (blocking until it is loaded)."""
        run_sync(self._open())
        return self

    async def start_async(self) -> "Dashboard":
        """Async form of :meth:`start`."""
        await run_async(self._open())
        return self

    def refresh_now(self) -> None:
        """Re-read queue depths and failed jobs now and redraw (the watches need no refresh)."""
        run_sync(self._reload())

    async def refresh_now_async(self) -> None:
        """Async form of :meth:`refresh_now`."""
        await run_async(self._reload())

    def close(self) -> None:
        """Stop the watches and timers; the last view stays on screen, its buttons disabled. Idempotent."""
        if not self._closed:
            run_sync(self._shutdown())

    async def close_async(self) -> None:
        """Async form of :meth:`close`."""
        if not self._closed:
            await run_async(self._shutdown())

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        """The live widget, with text/plain and text/html of the current view as fallbacks."""
        bundle = dict(self._ui.root._repr_mimebundle_() or {})
        bundle["text/plain"] = self.to_text()
        bundle["text/html"] = self.to_html()
        return bundle

    # --- loop side: start / stop ------------------------------------------------------------
    async def _open(self) -> None:
        if self._started:
            return
        if self._closed:
            raise RuntimeError("this dashboard was closed; make a new one with nq.dashboard()")
        self._started = True
        self._dirty = asyncio.Event()
        try:
            await asyncio.wait_for(self._subscribe(), _START_TIMEOUT)
        except BaseException:
            await self._shutdown()
            raise
        _open_dashboards.add(self)
        self._render()
        self._tasks += [asyncio.ensure_future(self._render_loop()), asyncio.ensure_future(self._tick_loop())]

    async def _subscribe(self) -> None:
        b = self._broker = await self.client.broker()
        lay = b.layout
        # Live feeds first, snapshots after: nothing that happens in between is missed.
        self._subs.append(await b.nc.subscribe(lay.kv_subject(lay.status_bucket, ">"), cb=self._on_status))
        for subject in lay.failed_stream_config().subjects:
            self._subs.append(await b.nc.subscribe(subject, cb=self._on_failed_msg))
        loaded = []
        for bucket, apply in ((lay.workers_bucket, self._apply_worker),
                              (lay.schedules_bucket, self._apply_schedule)):
            watcher = await (await b.kv(bucket)).watchall()
            self._watchers.append(watcher)
            ev = asyncio.Event()
            loaded.append(ev)
            self._tasks.append(asyncio.ensure_future(self._follow(watcher, apply, ev)))
        await asyncio.gather(*(ev.wait() for ev in loaded))
        await self._load_failed()
        await self._load_depths()

    async def _shutdown(self) -> None:
        self._closed = True
        _open_dashboards.discard(self)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in self._watchers:
            try:
                await w.stop()
            except Exception:
                pass
        for s in self._subs:
            try:
                await s.unsubscribe()
            except Exception:
                pass
        self._watchers, self._subs = [], []
        self._render()

    # --- loop side: feeds ------------------------------------------------------------------
    async def _follow(self, watcher: Any, apply: Callable[[Any], None], loaded: asyncio.Event) -> None:
        async for entry in watcher:
            if entry is None:  # the current values are all delivered
                loaded.set()
                continue
            try:
                apply(entry)
            except Exception as exc:  # one malformed record must not stop the feed
                log.debug("dashboard skipped a record of %s: %s", entry.key, exc)
            self._poke()

    def _apply_worker(self, entry: Any) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._workers.pop(entry.key, None)
            return
        rec = json.loads(entry.value)
        self._workers[entry.key] = rec
        self._known_queues.update(q for q in rec.get("queues") or () if isinstance(q, str))

    def _apply_schedule(self, entry: Any) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._schedules.pop(entry.key, None)
            return
        from ..core.schedules import Schedule
        row = Schedule.decode(entry.value, entry.revision)[0].to_row()
        self._schedules[entry.key] = row
        self._known_queues.add(row["queue"])

    async def _on_status(self, msg: Any) -> None:
        if not msg.data:
            return
        try:
            rec = json.loads(msg.data)
            status, queue = rec.get("status"), rec.get("queue")
        except (ValueError, AttributeError):
            return
        if isinstance(queue, str):
            self._known_queues.add(queue)
            if status in _FINISHED:
                self.rates.add(queue, time.monotonic())
        if status == JobStatus.QUEUED.value and rec.get("requeued_from") is not None:
            self._failed_stale = True  # someone requeued a failed job (maybe another client)
        self._poke()

    async def _on_failed_msg(self, msg: Any) -> None:
        self._failed_stale = True
        self._poke()

    def _poke(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    # --- loop side: reads --------------------------------------------------------------------
    async def _load_failed(self) -> None:
        from ..core.failed import list_failed
        b = self._broker
        info = await b.js.stream_info(b.layout.failed_stream)
        self._failed_total = int(info.state.messages)
        # list_failed reads oldest first; the newest rows are the interesting ones.
        entries = await list_failed(b, None, limit=1000)
        self._failed = entries[-self.max_rows:][::-1]
        for e in self._failed:
            if e.get("queue"):
                self._known_queues.add(e["queue"])

    async def _load_depths(self) -> None:
        b = self._broker
        lay = b.layout
        wildcard = lay.jobs_stream_config().subjects[0]
        info = await b.js.stream_info(lay.jobs_stream, subjects_filter=wildcard)
        self._depths = {lay.queue_of_subject(s): int(n) for s, n in (info.state.subjects or {}).items()}
        self._known_queues.update(self._depths)

    async def _reload(self) -> None:
        if self._closed or not self._started:
            return
        await self._load_failed()
        await self._load_depths()
        self._render()

    async def _render_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._failed_stale:
                self._failed_stale = False
                try:
                    await self._load_failed()
                except Exception as exc:
                    self._message = f"could not read failed jobs: {exc}"
            self._render()
            await asyncio.sleep(self.min_interval)  # the throttle: at most updates_per_second redraws

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self._load_depths()
            except Exception as exc:
                self._message = f"could not read queue depths: {exc}"
            self._poke()  # heartbeat ages and rates move with time

    # --- views -----------------------------------------------------------------------------------
    def _build_view(self, now: float) -> dict:
        rates = self.rates.rates(time.monotonic())
        queues = [{"queue": q, "depth": self._depths.get(q, 0), "finished_per_s": f"{rates.get(q, 0.0):.1f}"}
                  for q in sorted(self._known_queues)]
        ttl = self.client.settings.worker_ttl
        workers = []
        for wid, r in sorted(self._workers.items()):
            age = max(0.0, now - float(r.get("heartbeat_at") or 0))
            if age > ttl:
                continue  # died without removing its record; the bucket TTL will drop it
            running = list(r.get("running") or [])
            workers.append({"worker_id": r.get("id", wid), "host": r.get("host"), "state": r.get("state"),
                            "running": (running[0] + (f" (+{len(running) - 1})" if len(running) > 1 else ""))
                            if running else "-", "heartbeat_age": format_age(age)})
        rows = sorted(self._schedules.values(), key=lambda s: (s.get("next_run") is None, s.get("next_run") or 0))
        schedules = [{"schedule_id": s["schedule_id"], "function": s.get("function"), "every": format_every(s),
                      "next_run": format_when(s.get("next_run"), now),
                      "runs": f"{s.get('runs', 0)}/{s['repeat']}" if s.get("repeat") else str(s.get("runs", 0)),
                      "paused": "yes" if s.get("paused") else "no", "_paused": bool(s.get("paused"))}
                     for s in rows[:self.max_rows]]
        failed = [{"job_id": f.get("job_id") or "", "function": f.get("func"),
                   "error": (f.get("error") or "")[:120], "attempts": f.get("attempts"),
                   "_key": f.get("job_id") or f"seq:{f['seq']}", "_seq": f["seq"],
                   "_requeueable": bool(f.get("requeueable"))} for f in self._failed]
        more = self._failed_total - len(failed)
        return {"url": self.client.url, "updated_at": time.time(), "closed": self._closed, "queues": queues,
                "workers": workers, "schedules": schedules, "schedules_total": len(rows), "failed": failed,
                "failed_total": self._failed_total, "failed_more": max(0, more), "message": self._message}

    def _render(self) -> None:
        self._view = self._build_view(time.time())
        try:
            self._ui.update(self._view)
        except Exception as exc:  # a widget problem must not stop the feeds
            log.debug("dashboard redraw failed: %s", exc)

    # --- button actions (called on the kernel's thread) -----------------------------------------
    def _say(self, message: str) -> None:
        def apply() -> None:
            self._message = message
            self._poke()
        loop = get_loop_thread().loop
        loop.call_soon_threadsafe(apply)

    def _requeue(self, key: str) -> None:
        row = next((f for f in self._view.get("failed", []) if f["_key"] == key), None)
        if row is None:
            self._say(f"{key} is no longer in the failed list")
            return
        try:
            job_id = self.client.requeue_sync(row["_seq"])
            self._say(f"requeued {job_id}")
        except Exception as exc:
            self._say(f"requeue of {key} failed: {type(exc).__name__}: {exc}")
        loop = get_loop_thread().loop
        loop.call_soon_threadsafe(self._mark_failed_stale)

    def _mark_failed_stale(self) -> None:
        self._failed_stale = True
        self._poke()

    def _toggle_schedule(self, schedule_id: str, pause: bool) -> None:
        from ..client.scheduling import pause_scheduled_job_sync, resume_scheduled_job_sync
        try:
            (pause_scheduled_job_sync if pause else resume_scheduled_job_sync)(schedule_id, client=self.client)
            self._say(f"{'paused' if pause else 'resumed'} {schedule_id}")
        except Exception as exc:
            self._say(f"{'pause' if pause else 'resume'} of {schedule_id} failed: {type(exc).__name__}: {exc}")


_open_dashboards: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


async def _close_all() -> None:
    for d in list(_open_dashboards):
        try:
            await d._shutdown()
        except Exception:
            pass


on_exit(_close_all)


def dashboard(client: Client | None = None, refresh: float = 2.0, *, updates_per_second: float = 4.0,
              max_rows: int = 20, rate_window: float = 10.0) -> Dashboard:
    """A live :class:`Dashboard` of queues, workers, schedules and failed jobs (started, first view loaded).

    ``client``: the session's default client when None. ``refresh``: seconds
    between queue-depth reads (everything else is pushed). ``updates_per_second``
    caps redraws; ``max_rows`` caps the schedule and failed rows shown;
    ``rate_window`` is the span of the finished-per-second rates. Bad values
    raise ``TypeError``/``ValueError`` before anything is opened.
    """
    return Dashboard(client, refresh, updates_per_second=updates_per_second, max_rows=max_rows,
                     rate_window=rate_window).start()


async def dashboard_async(client: Client | None = None, refresh: float = 2.0, *, updates_per_second: float = 4.0,
                          max_rows: int = 20, rate_window: float = 10.0) -> Dashboard:
    """Async form of :func:`dashboard`."""
    return await Dashboard(client, refresh, updates_per_second=updates_per_second, max_rows=max_rows,
                           rate_window=rate_window).start_async()
