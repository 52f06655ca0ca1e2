"""``nq.dashboard()``: one live view of queues, workers, schedules and failed jobs.

The data arrives by push wherever NATS pushes:

* workers and schedules: a KV watch on each bucket (the current records first,
  then every put or delete as it happens);
* job status changes: one core subscription on the status bucket's subjects,
  which feeds the finished-per-second rates and notices requeues;
* failed jobs: a core subscription on the failed stream's subjects; the list is
  re-read from the stream (at most once per redraw) when something lands there.

Only queue depths (stream and consumer info: waiting jobs, not the ones a
worker holds) are read periodically, every ``refresh`` seconds; the same tick
samples the charts (finished jobs per second and queue depth over the last
``history`` seconds) and ages heartbeats. From the status feed the dashboard
also keeps the recent jobs (a task stream per worker, durations) and each
worker's load between heartbeats. Everything runs on naq_nb's background
loop; redraws are throttled to ``updates_per_second`` and only touch widget
traits (never ``print``), so they are safe from that thread.

Buttons act through the client: Details per recent job (arguments, logs,
traceback), Pause/Resume per schedule, Requeue per failed job. ``.close()``
stops the watches and replaces the output with the static HTML of the last
view; so does ``cluster.stop()`` for dashboards of that cluster, and a
connection that closes ("disconnected"). A saved notebook thus shows the
final view, never a missing widget.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from ..client.client import Client
from ..client.loop import on_exit, run_async
from ..client.twins import blocking
from ..client.session import default_client
from ..core.errors import JobNotFoundError
from ..core.queue import get_status
from .dashboard_actions import DashboardActions
from .dashboard_rows import DashboardRows
from .dashboard_state import DashboardState
from .dashboard_view import (
    Actions,
    DashboardWidgets,
    render_html,
    render_text,
)

if TYPE_CHECKING:
    import ipywidgets

__all__ = ["Dashboard", "dashboard", "dashboard_async", "close_dashboards"]

log = logging.getLogger("naq_nb.dashboard")

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0  # seconds for each step of closing (feed tasks, each watch, each subscription)


# --- the dashboard -----------------------------------------------------------------------------
def _check_args(
    client: Any, refresh: Any, updates_per_second: Any, max_rows: Any, rate_window: Any, history: Any = 300.0
) -> None:
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"dashboard(client=...) needs a naq_nb Client or None, not {type(client).__name__}")
    for name, value, low in (("refresh", refresh, 0.2), ("rate_window", rate_window, 1.0), ("history", history, 10)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise ValueError(f"dashboard({name}=...) must be seconds >= {low:g}, not {value!r}")
    if (
        isinstance(updates_per_second, bool)
        or not isinstance(updates_per_second, (int, float))
        or not 0 < updates_per_second <= 30
    ):
        raise ValueError(f"dashboard(updates_per_second=...) must be in (0, 30], not {updates_per_second!r}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"dashboard(max_rows=...) must be an int >= 1, not {max_rows!r}")


class Dashboard(DashboardActions, DashboardRows, DashboardState):
    """A live ipywidgets view of one NATS deployment; see the module docstring.

    Made and started by :func:`dashboard`. Display it (last expression of a
    cell) for the live widget; ``to_text()`` / ``to_html()`` / ``state()`` give
    the current view without widgets.
    """

    def __init__(
        self,
        client: Client | None = None,
        refresh: float = 2.0,
        *,
        updates_per_second: float = 4.0,
        max_rows: int = 20,
        rate_window: float = 10.0,
        history: float = 300.0,
    ) -> None:
        _check_args(client, refresh, updates_per_second, max_rows, rate_window, history)
        self.client = client or default_client()
        self.refresh = float(refresh)
        self.history = float(history)
        self.min_interval = 1.0 / updates_per_second
        self.max_rows = max_rows
        # Mutated on naq_nb's loop thread only; other threads read the immutable `_view`.
        self._init_state(rate_window)
        self._detail = ""
        self._message = ""
        self._render_error = ""  # the last redraw's error, warned about once per run of failures
        self._state = "live"
        self._failed_stale = False
        self._dirty: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._watchers: list[Any] = []
        self._subs: list[Any] = []
        self._status_prefix = ""  # the status bucket's subject up to the key, set on subscribing
        self._handles: list[Any] = []
        self._broker: Any = None
        self._closed = False
        self._started = False
        self._view: dict = {"url": self.client.url, "updated_at": time.time(), "closed": False}
        self._ui = DashboardWidgets(Actions(self._requeue, self._toggle_schedule, self._show_detail))

    # --- public -------------------------------------------------------------------------
    @property
    def widget(self) -> "ipywidgets.VBox":
        """The root widget (a VBox)."""
        return self._ui.root

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (or once the cluster stopped or the connection closed)."""
        return self._closed

    @property
    def requeue_buttons(self) -> dict[str, "ipywidgets.Button"]:
        """The Requeue button of each failed job shown, by job id (or ``seq:<n>`` without one)."""
        return self._ui.row_buttons("failed")

    @property
    def schedule_buttons(self) -> dict[str, "ipywidgets.Button"]:
        """The Pause/Resume button of each schedule shown, by schedule id."""
        return self._ui.row_buttons("schedules")

    @property
    def detail_buttons(self) -> dict[str, "ipywidgets.Button"]:
        """The Details button of each recent job shown, by job id."""
        return self._ui.row_buttons("recent")

    def state(self) -> dict:
        """The current view: queues, workers, recent, schedules, failed (lists of dicts), chart series, totals."""
        return dict(self._view)

    def to_text(self) -> str:
        """The current view as plain text."""
        return render_text(self._view)

    def to_html(self) -> str:
        """The current view as HTML: charts, tables and task stream (no widgets)."""
        return render_html(self._view)

    async def start_async(self) -> "Dashboard":
        """Open the watches and draw the first view (blocking until it is loaded)."""
        await run_async(self._open())
        return self

    start = blocking(start_async)

    async def refresh_now_async(self) -> None:
        """Re-read queue depths and failed jobs now and redraw (the watches need no refresh)."""
        await run_async(self._reload())

    refresh_now = blocking(refresh_now_async)

    async def close_async(self, reason: str = "closed") -> None:
        """Stop the watches and timers; the output becomes the static last view, buttons disabled. Idempotent."""
        if not self._closed:
            await run_async(self._shutdown(reason))

    close = blocking(close_async)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        """The live widget (until closed), with text/plain and text/html of the current view as fallbacks."""
        bundle = {} if self._closed else dict(self._ui.root._repr_mimebundle_() or {})
        bundle["text/plain"] = self.to_text()
        bundle["text/html"] = self.to_html()
        return bundle

    def _ipython_display_(self) -> None:
        # With a display id: closing replaces this output by the static view (what a saved notebook keeps).
        from IPython.display import display

        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def _final_display(self) -> None:
        from .display import kernel_shell

        if not self._handles or kernel_shell() is None:
            return
        bundle = {"text/plain": self.to_text(), "text/html": self.to_html()}
        for h in self._handles:
            try:  # an empty context: addressed to the cell running now (see display.LiveDisplay._send)
                contextvars.Context().run(h.update, bundle, raw=True)
            except (OSError, RuntimeError, ValueError) as exc:  # the kernel is shutting down
                log.debug("dashboard: final display update failed: %s", exc)

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
        self._sample()
        self._render()
        self._tasks += [asyncio.ensure_future(self._render_loop()), asyncio.ensure_future(self._tick_loop())]

    async def _subscribe(self) -> None:
        b = self._broker = await self.client.broker()
        lay = b.layout
        # Live feeds first, snapshots after: nothing that happens in between is missed.
        self._status_prefix = lay.kv_subject(lay.status_bucket, "")
        self._subs.append(await b.nc.subscribe(lay.kv_subject(lay.status_bucket, ">"), cb=self._on_status))
        self._subs.append(await b.nc.subscribe(lay.all_failed_subject, cb=self._on_failed_msg))
        loaded = []
        for bucket, apply in ((lay.workers_bucket, self._apply_worker), (lay.schedules_bucket, self._apply_schedule)):
            watcher = await (await b.kv(bucket)).watchall()
            self._watchers.append(watcher)
            ev = asyncio.Event()
            loaded.append(ev)
            self._tasks.append(asyncio.ensure_future(self._follow(watcher, apply, ev)))
        await asyncio.gather(*(ev.wait() for ev in loaded))
        await self._load_failed()
        await self._load_depths()

    async def _shutdown(self, reason: str = "closed") -> None:
        if self._closed:
            return
        await self._last_reads()
        self._closed = True
        self._state = reason
        _open_dashboards.discard(self)
        tasks, self._tasks = self._tasks, []
        others = [t for t in tasks if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        # Each step bounded: closing must end even if a feed or the connection does not answer.
        if others:
            done, stuck = await asyncio.wait(others, timeout=_STOP_TIMEOUT)
            for t in done:
                if not t.cancelled():
                    t.exception()  # retrieved: a feed that had failed is not news now
            if stuck:
                log.warning("dashboard: %d feed task(s) did not stop within %gs", len(stuck), _STOP_TIMEOUT)
        for w in self._watchers:
            try:
                await asyncio.wait_for(w.stop(), _STOP_TIMEOUT)
            except Exception as exc:  # the connection may be gone already: nothing left to stop
                log.debug("dashboard: stopping a watch: %s", exc)
        for sub in self._subs:
            try:
                await asyncio.wait_for(sub.unsubscribe(), _STOP_TIMEOUT)
            except Exception as exc:  # same: a closed connection has no subscriptions
                log.debug("dashboard: unsubscribing: %s", exc)
        self._watchers, self._subs = [], []
        self._render()
        self._final_display()

    async def _last_reads(self) -> None:
        """The periodic reads once more (bounded): the static view a close leaves, what a saved notebook
        keeps, tells the queues at the close, not at the last tick (a finished sweep's showed jobs queued)."""
        b = self._broker
        if not self._started or b is None or b.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self._load_depths(), _STOP_TIMEOUT)
            if self._failed_stale:
                self._failed_stale = False
                await asyncio.wait_for(self._load_failed(), _STOP_TIMEOUT)
        except Exception as exc:  # (a timeout too) closing goes on with the last view
            log.debug("dashboard: last reads before closing: %s", exc)

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

    async def _on_status(self, msg: Any) -> None:
        if self._apply_status(msg.subject[len(self._status_prefix) :], msg.data):
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
        self._failed = entries[-self.max_rows :][::-1]
        for e in self._failed:
            if e.get("queue"):
                self._known_queues.add(e["queue"])

    async def _load_depths(self) -> None:
        from ..core.depths import queue_depths

        self._depths = await queue_depths(self._broker, sorted(self._known_queues))
        self._known_queues.update(self._depths)
        # Jobs running since before the dashboard opened (named by heartbeats): learn their queue once.
        unknown = [j for jobs in self._running.values() for j in jobs if j not in self._recent][:50]
        for jid in unknown:
            try:
                self._track_job(await get_status(self._broker, jid))
            except JobNotFoundError:
                for jobs in self._running.values():
                    jobs.discard(jid)

    def _sample(self) -> None:
        now = time.time()
        running = self._running_per_queue()
        self._samples.append(
            (now, self._finished, {q: max(0, d["total"] - running.get(q, 0)) for q, d in self._depths.items()})
        )
        while self._samples and self._samples[0][0] < now - self.history:
            self._samples.popleft()

    async def _reload(self) -> None:
        if self._closed or not self._started:
            return
        await self._load_failed()
        await self._load_depths()
        self._render()

    async def _render_loop(self) -> None:
        dirty = self._dirty
        assert dirty is not None  # made by start(), before this loop
        while True:
            await dirty.wait()
            dirty.clear()
            if self._failed_stale:
                self._failed_stale = False
                try:
                    await self._load_failed()
                except Exception as exc:  # shown on the dashboard; the next change tries again
                    self._message = f"could not read failed jobs: {exc}"
            self._render()
            await asyncio.sleep(self.min_interval)  # the throttle: at most updates_per_second redraws

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            if self._broker is not None and self._broker.nc.is_closed:
                await self._shutdown("disconnected: the NATS connection is closed")
                return
            try:
                await self._load_depths()
            except Exception as exc:  # shown on the dashboard; the next tick tries again
                self._message = f"could not read queue depths: {exc}"
            self._sample()
            self._forget_gone_workers(time.time())
            self._poke()  # heartbeat ages, rates and charts move with time

    def _render(self) -> None:
        try:
            self._view = self._build_view(time.time())
            self._render_error = ""
        except Exception as exc:  # one bad record must not kill the redraw loop (nor close): keep the last view
            self._note_render_error(exc)
            self._view = {**self._view, "closed": self._closed, "state": self._state}
        try:
            self._ui.update(self._view)
        except Exception as exc:  # a widget problem must not stop the feeds
            log.debug("dashboard redraw failed: %s", exc)

    def _note_render_error(self, exc: Exception) -> None:
        # Warned once per run of failures: a record that keeps failing would otherwise log every redraw.
        text = f"{type(exc).__name__}: {exc}"
        if text != self._render_error:
            log.warning("dashboard: redraw failed, the last view stays: %s", text, exc_info=exc)
        else:
            log.debug("dashboard: redraw failed again: %s", text)
        self._render_error = text


_open_dashboards: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


def close_dashboards(client: Client, reason: str) -> None:
    """Close every open dashboard of ``client`` (``cluster.stop()`` calls it); each shows ``reason``."""
    for d in list(_open_dashboards):
        if d.client is client:
            d.close(reason)


async def _close_all() -> None:
    for d in list(_open_dashboards):
        try:
            await d._shutdown()
        except Exception as exc:  # at exit: one failure must not keep the others open
            log.debug("dashboard: closing at exit: %s", exc)


on_exit(_close_all)


async def dashboard_async(
    client: Client | None = None,
    refresh: float = 2.0,
    *,
    updates_per_second: float = 4.0,
    max_rows: int = 20,
    rate_window: float = 10.0,
    history: float = 300.0,
) -> Dashboard:
    """A live :class:`Dashboard` of queues, workers, jobs, schedules and failed jobs (started, first view loaded).

    ``client``: the session's default client when None. ``refresh``: seconds
    between queue-depth reads and chart samples (everything else is pushed).
    ``updates_per_second`` caps redraws; ``max_rows`` caps the recent, schedule
    and failed rows shown; ``rate_window`` is the span of the finished-per-second
    rates; ``history`` the seconds the charts and the task stream cover. Bad
    values raise ``TypeError``/``ValueError`` before anything is opened.
    """
    return await Dashboard(
        client,
        refresh,
        updates_per_second=updates_per_second,
        max_rows=max_rows,
        rate_window=rate_window,
        history=history,
    ).start_async()


dashboard = blocking(dashboard_async)
