"""How a dashboard looks: text and HTML renderings of a view, and its ipywidgets tree.

A *view* is a plain dict built by :class:`~naq_nb.notebook.dashboard.Dashboard`
(rows per section, chart series, a few totals); everything here turns a view
into text, HTML or widget traits and holds no connection of its own. Buttons
call the :class:`Actions` given to :class:`DashboardWidgets` (this module
never imports the dashboard). Keys starting with ``_`` in a row are for the
buttons, not for display.
"""

from __future__ import annotations

import collections
import functools
import html
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .dashboard_charts import line_chart, load_bars, task_stream
from .fmt import clock_text

__all__ = [
    "RateMeter",
    "Actions",
    "DashboardWidgets",
    "render_text",
    "render_html",
    "format_age",
    "format_when",
    "format_every",
    "QUEUE_COLUMNS",
    "WORKER_COLUMNS",
    "SCHEDULE_COLUMNS",
    "FAILED_COLUMNS",
    "RECENT_COLUMNS",
]

QUEUE_COLUMNS = ["queue", "queued", "running", "workers", "finished_per_s"]
WORKER_COLUMNS = ["worker_id", "host", "state", "load", "processed", "failed", "heartbeat_age"]
SCHEDULE_COLUMNS = ["schedule_id", "function", "every", "next_run", "runs", "paused", "failing"]
FAILED_COLUMNS = ["job_id", "function", "error", "attempts"]
RECENT_COLUMNS = ["job_id", "function", "queue", "status", "duration", "worker"]


@dataclass
class Actions:
    """What the buttons do (called on the kernel's thread)."""

    requeue: Callable[[str], None]
    toggle_schedule: Callable[[str, bool], None]
    show_detail: Callable[[str], None]


class RateMeter:
    """Events per second per key over a sliding window (finished jobs per queue)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = float(window)
        self._events: dict[str, collections.deque[float]] = {}

    def add(self, key: str, t: float) -> None:
        """Count one event for ``key`` at monotonic time ``t``."""
        self._events.setdefault(key, collections.deque()).append(t)

    def rates(self, now: float) -> dict[str, float]:
        """Per key: events in the last ``window`` seconds divided by the window."""
        out = {}
        for key, q in self._events.items():
            while q and q[0] < now - self.window:
                q.popleft()
            out[key] = len(q) / self.window
        return out


# --- formatting ----------------------------------------------------------------------------
def format_age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 60 else f"{seconds / 60:.0f}m"


def format_when(t: float | None, now: float) -> str:
    if not t:
        return "-"
    stamp = clock_text(t)
    d = t - now
    rel = "now" if abs(d) < 1 else (f"in {format_age(d)}" if d > 0 else f"{format_age(-d)} ago")
    return f"{stamp} UTC ({rel})"


def format_every(row: Mapping[str, Any]) -> str:
    if row.get("cron"):
        return f"cron {row['cron']}" + (f" {row['timezone']}" if row.get("timezone") else "")
    if row.get("interval"):
        return f"every {row['interval']:g}s"
    return "once"


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _text_table(rows: list[dict], columns: list[str]) -> list[str]:
    if not rows:
        return ["  (none)"]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  " + "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return lines


_CELL_STYLE = "text-align:left;padding:2px 14px 2px 0"


def _html_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    head = "".join(f"<th style='{_CELL_STYLE}'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL_STYLE}'>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_SECTIONS = [
    ("Queues", "queues", QUEUE_COLUMNS),
    ("Workers", "workers", WORKER_COLUMNS),
    ("Recent jobs", "recent", RECENT_COLUMNS),
    ("Schedules", "schedules", SCHEDULE_COLUMNS),
    ("Failed jobs", "failed", FAILED_COLUMNS),
]


def render_text(view: dict) -> str:
    """A plain-text rendering of a dashboard view (what ``Dashboard.to_text`` returns)."""
    lines = [title_of(view)]
    for title, key, cols in _SECTIONS:
        lines.append(f"{title}:")
        lines += _text_table(view.get(key, []), cols)
    if view.get("message"):
        lines.append(view["message"])
    return "\n".join(lines)


def charts_html(view: dict) -> str:
    """Throughput and queue depth over the last minutes, side by side."""
    span = view.get("span", 300.0)
    now = view.get("updated_at")
    return (
        "<div style='display:flex;gap:12px;flex-wrap:wrap'>"
        + line_chart("Finished jobs/s", view.get("throughput", {}), span, now, unit="/s")
        + line_chart("Queued jobs", view.get("depth", {}), span, now)
        + "</div>"
    )


def stream_html(view: dict) -> str:
    """The task stream: one lane per worker, a bar per job."""
    return task_stream(view.get("stream", []), view.get("lanes", []), view.get("span", 300.0), view.get("updated_at"))


def render_html(view: dict) -> str:
    """An HTML rendering of a dashboard view: charts, tables, task stream (no widgets)."""
    parts = [f"<div class='naq-dashboard'><b>{html.escape(title_of(view))}</b>", charts_html(view)]
    for title, key, cols in _SECTIONS:
        parts.append(f"<h4>{html.escape(title)}</h4>")
        if key == "workers":
            parts.append(load_bars(view.get("workers", [])))
            parts.append(f"<h4>Task stream</h4>{stream_html(view)}")
        elif key == "recent" and view.get("detail"):
            parts.append(_html_table(view.get(key, []), cols) + view["detail"])
        else:
            parts.append(_html_table(view.get(key, []), cols))
    if view.get("message"):
        parts.append(f"<p>{html.escape(view['message'])}</p>")
    return "".join(parts) + "</div>"


def title_of(view: dict) -> str:
    """``naq_nb dashboard: nats://... (live, updated 12:00:00 UTC)``; the state says closed/stopped/disconnected."""
    state = view.get("state") or ("closed" if view.get("closed") else "live")
    stamp = clock_text(view.get("updated_at") or 0)
    return f"naq_nb dashboard: {view.get('url', '')} ({state}, updated {stamp} UTC)"


class DashboardWidgets:
    """The ipywidgets tree of a dashboard; rows and their buttons are reused across redraws."""

    _COLUMNS = {"recent": RECENT_COLUMNS, "schedules": SCHEDULE_COLUMNS, "failed": FAILED_COLUMNS}
    _KEYS = {"recent": "job_id", "schedules": "schedule_id", "failed": "_key"}
    # Recent jobs change many times a second: their rows are a fixed pool of widgets whose values
    # change, never widgets made and closed per job (closing views the browser still draws breaks them).
    _POOLED = ("recent",)

    def __init__(self, actions: Actions) -> None:
        import ipywidgets as w

        self.w = w
        self.actions = actions
        self._lock = threading.Lock()  # redraws come from the loop, close() from the caller's thread
        self.title, self.charts, self.queues = w.HTML(), w.HTML(), w.HTML()
        self.workers, self.stream, self.detail, self.message = w.HTML(), w.HTML(), w.HTML(), w.HTML()
        self._rows: dict[str, dict[str, tuple[list, Any]]] = {k: {} for k in self._COLUMNS}
        self._pool: list[tuple[list, Any]] = []  # recent rows: cells and Details button, by position
        self._pool_keys: list[str] = []
        self.grids: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        for kind, cols in self._COLUMNS.items():
            template = " ".join(["max-content"] * len(cols)) + " max-content"
            self.grids[kind] = w.GridBox(
                layout=w.Layout(grid_template_columns=template, grid_gap="2px 14px", align_items="center")
            )
            self.notes[kind] = w.HTML()
        self._none = {kind: w.HTML("<i>none</i>") for kind in self._COLUMNS}
        self._headers = {
            kind: [w.HTML(f"<b>{c}</b>") for c in cols] + [w.HTML("")] for kind, cols in self._COLUMNS.items()
        }
        h = lambda t: w.HTML(f"<h4 style='margin:8px 0 2px'>{t}</h4>")  # noqa: E731
        self.root = w.VBox(
            [
                self.title,
                self.charts,
                h("Queues"),
                self.queues,
                h("Workers"),
                self.workers,
                h("Task stream"),
                self.stream,
                h("Recent jobs"),
                self.grids["recent"],
                self.detail,
                h("Schedules"),
                self.grids["schedules"],
                self.notes["schedules"],
                h("Failed jobs"),
                self.grids["failed"],
                self.notes["failed"],
                self.message,
            ]
        )
        self.root.add_class("naq-dashboard")

    def row_buttons(self, kind: str) -> dict[str, Any]:
        """The main button of each row shown in section ``kind`` (recent, schedules, failed), by row key."""
        with self._lock:
            if kind in self._POOLED:
                return {k: self._pool[i][1] for i, k in enumerate(self._pool_keys)}
            return {k: v[1] for k, v in self._rows[kind].items()}

    def update(self, view: dict) -> None:
        """Set the widgets' traits from ``view``; only changed values reach the browser."""
        with self._lock:
            closed = view["closed"]
            self.title.value = f"<b>{html.escape(title_of(view))}</b>"
            self.charts.value = charts_html(view)
            self.queues.value = _html_table(view["queues"], QUEUE_COLUMNS)
            self.workers.value = load_bars(view["workers"])
            self.stream.value = stream_html(view)
            self._pooled_grid(view["recent"], closed)
            for kind in ("schedules", "failed"):
                self._grid(kind, view[kind], closed)
            self.detail.value = view.get("detail") or ""
            extra = view["schedules_total"] - len(view["schedules"])
            self.notes["schedules"].value = "" if extra <= 0 else f"<i>... and {extra} more</i>"
            self.notes["failed"].value = (
                "" if not view["failed_more"] else f"<i>{view['failed_total']} failed in all; the newest shown</i>"
            )
            self.message.value = f"<i>{html.escape(view['message'])}</i>" if view["message"] else ""

    def _pooled_click(self, i: int, _button: Any) -> None:
        if i < len(self._pool_keys):  # the pool may hold more buttons than rows shown
            self.actions.show_detail(self._pool_keys[i])

    def _pooled_grid(self, rows: list[dict], closed: bool) -> None:
        cols = self._COLUMNS["recent"]
        while len(self._pool) < len(rows):
            i = len(self._pool)
            b = self.w.Button(
                description="Details", tooltip="arguments, logs and traceback", layout=self.w.Layout(width="90px")
            )
            b.on_click(functools.partial(self._pooled_click, i))
            b.add_class("naq-recent-button")
            self._pool.append(([self.w.HTML() for _ in cols], b))
        self._pool_keys = [r["job_id"] for r in rows]
        children = list(self._headers["recent"]) if rows else [self._none["recent"]]
        for (cells, button), r in zip(self._pool, rows):
            for cell, c in zip(cells, cols):
                cell.value = html.escape(_cell(r.get(c)))
            button.disabled = closed
            children += cells + [button]
        grid = self.grids["recent"]
        if tuple(children) != tuple(grid.children):
            grid.children = tuple(children)

    def _grid(self, kind: str, rows: list[dict], closed: bool) -> None:
        cache = self._rows[kind]
        cols = self._COLUMNS[kind]
        children = list(self._headers[kind]) if rows else [self._none[kind]]
        keep = set()
        for r in rows:
            key = r[self._KEYS[kind]]
            keep.add(key)
            if key not in cache:
                cache[key] = ([self.w.HTML() for _ in cols], self._button(kind, key))
            cells, button = cache[key]
            for cell, c in zip(cells, cols):
                cell.value = html.escape(_cell(r.get(c)))
            if kind == "schedules":
                button.description = "Resume" if r["_paused"] else "Pause"
                button.disabled = closed
            elif kind == "failed":
                button.disabled = closed or not r["_requeueable"]
            else:
                button.disabled = closed
            children += cells + [button]
        for key in set(cache) - keep:
            cells, button = cache.pop(key)
            for wdg in (*cells, button):
                wdg.close()
        grid = self.grids[kind]
        if tuple(children) != tuple(grid.children):
            grid.children = tuple(children)

    def _button(self, kind: str, key: str) -> Any:
        a, w = self.actions, self.w
        if kind == "failed":
            b = w.Button(
                description="Requeue", button_style="warning", tooltip=f"requeue {key}", layout=w.Layout(width="90px")
            )
            b.on_click(lambda _b: a.requeue(key))
        elif kind == "schedules":
            b = w.Button(description="Pause", tooltip=f"pause or resume {key}", layout=w.Layout(width="90px"))
            b.on_click(lambda btn: a.toggle_schedule(key, btn.description == "Pause"))
        else:
            b = w.Button(
                description="Details", tooltip=f"arguments, logs and traceback of {key}", layout=w.Layout(width="90px")
            )
            b.on_click(lambda _b: a.show_detail(key))
        b.add_class(f"naq-{kind}-button")
        return b
