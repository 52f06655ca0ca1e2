"""How a dashboard looks: the finished-rate meter, text and HTML renderings, the ipywidgets tree.

A *view* is a plain dict built by :class:`~naq_nb.notebook.dashboard.Dashboard`
(lists of row dicts per section plus a few totals); everything here turns a
view into text, HTML or widget traits and holds no connection of its own.
Keys starting with ``_`` in a row are for the buttons, not for display.
"""

from __future__ import annotations

import collections
import html
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dashboard import Dashboard

__all__ = ["RateMeter", "DashboardWidgets", "render_text", "render_html", "format_age", "format_when",
           "format_every", "QUEUE_COLUMNS", "WORKER_COLUMNS", "SCHEDULE_COLUMNS", "FAILED_COLUMNS"]

QUEUE_COLUMNS = ["queue", "depth", "finished_per_s"]
WORKER_COLUMNS = ["worker_id", "host", "state", "running", "heartbeat_age"]
SCHEDULE_COLUMNS = ["schedule_id", "function", "every", "next_run", "runs", "paused"]
FAILED_COLUMNS = ["job_id", "function", "error", "attempts"]


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
    stamp = time.strftime("%H:%M:%S", time.gmtime(t))
    d = t - now
    rel = "now" if abs(d) < 1 else (f"in {format_age(d)}" if d > 0 else f"{format_age(-d)} ago")
    return f"{stamp} UTC ({rel})"


def format_every(row: dict) -> str:
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
    body = "".join("<tr>" + "".join(f"<td style='{_CELL_STYLE}'>{html.escape(_cell(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_text(view: dict) -> str:
    """A plain-text rendering of a dashboard view (what ``Dashboard.to_text`` returns)."""
    lines = [title_of(view)]
    for title, key, cols in _SECTIONS:
        lines.append(f"{title}:")
        lines += _text_table(view.get(key, []), cols)
    if view.get("message"):
        lines.append(view["message"])
    return "\n".join(lines)


def render_html(view: dict) -> str:
    """An HTML rendering of a dashboard view (tables, no widgets)."""
    parts = [f"<div class='naq-dashboard'><b>{html.escape(title_of(view))}</b>"]
    for title, key, cols in _SECTIONS:
        parts.append(f"<h4>{html.escape(title)}</h4>{_html_table(view.get(key, []), cols)}")
    if view.get("message"):
        parts.append(f"<p>{html.escape(view['message'])}</p>")
    return "".join(parts) + "</div>"


def title_of(view: dict) -> str:
    state = "closed" if view.get("closed") else "live"
    stamp = time.strftime("%H:%M:%S", time.gmtime(view.get("updated_at") or 0))
    return f"naq_nb dashboard: {view.get('url', '')} ({state}, updated {stamp} UTC)"


_SECTIONS = [("Queues", "queues", QUEUE_COLUMNS), ("Workers", "workers", WORKER_COLUMNS),
             ("Schedules", "schedules", SCHEDULE_COLUMNS), ("Failed jobs", "failed", FAILED_COLUMNS)]


class DashboardWidgets:
    """The ipywidgets tree of a :class:`Dashboard`; rows and their buttons are reused across redraws."""

    _COLUMNS = {"schedules": SCHEDULE_COLUMNS, "failed": FAILED_COLUMNS}

    def __init__(self, dash: "Dashboard") -> None:
        import ipywidgets as w
        self.w = w
        self.dash = dash
        self._lock = threading.Lock()  # redraws come from the loop, close() from the caller's thread
        self.title = w.HTML()
        self.queues = w.HTML()
        self.workers = w.HTML()
        self.message = w.HTML()
        self._rows: dict[str, dict[str, tuple[list, Any]]] = {"schedules": {}, "failed": {}}
        self.grids: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        for kind, cols in self._COLUMNS.items():
            template = " ".join(["max-content"] * len(cols)) + " max-content"
            self.grids[kind] = w.GridBox(layout=w.Layout(grid_template_columns=template, grid_gap="2px 14px",
                                                         align_items="center"))
            self.notes[kind] = w.HTML()
        self._none = {kind: w.HTML("<i>none</i>") for kind in self._COLUMNS}
        self._headers = {kind: [w.HTML(f"<b>{c}</b>") for c in cols] + [w.HTML("")]
                         for kind, cols in self._COLUMNS.items()}
        self.root = w.VBox([self.title, w.HTML("<h4>Queues</h4>"), self.queues, w.HTML("<h4>Workers</h4>"),
                            self.workers, w.HTML("<h4>Schedules</h4>"), self.grids["schedules"],
                            self.notes["schedules"], w.HTML("<h4>Failed jobs</h4>"), self.grids["failed"],
                            self.notes["failed"], self.message])
        self.root.add_class("naq-dashboard")

    def row_buttons(self, kind: str) -> dict[str, Any]:
        """The buttons of the rows shown in section ``kind`` ("schedules" or "failed"), by row key."""
        with self._lock:
            return {k: v[1] for k, v in self._rows[kind].items()}

    def update(self, view: dict) -> None:
        """Set the widgets' traits from ``view``; only changed values reach the browser."""
        with self._lock:
            self.title.value = f"<b>{html.escape(title_of(view))}</b>"
            self.queues.value = _html_table(view["queues"], QUEUE_COLUMNS)
            self.workers.value = _html_table(view["workers"], WORKER_COLUMNS)
            self._grid("schedules", view["schedules"], "schedule_id", view["closed"])
            self._grid("failed", view["failed"], "_key", view["closed"])
            extra = view["schedules_total"] - len(view["schedules"])
            self.notes["schedules"].value = "" if extra <= 0 else f"<i>... and {extra} more</i>"
            self.notes["failed"].value = ("" if not view["failed_more"] else
                                          f"<i>{view['failed_total']} failed in all; the newest shown</i>")
            self.message.value = f"<i>{html.escape(view['message'])}</i>" if view["message"] else ""

    def _grid(self, kind: str, rows: list[dict], key_col: str, closed: bool) -> None:
        cache = self._rows[kind]
        cols = self._COLUMNS[kind]
        children = list(self._headers[kind]) if rows else [self._none[kind]]
        keep = set()
        for r in rows:
            key = r[key_col]
            keep.add(key)
            if key not in cache:
                cache[key] = ([self.w.HTML() for _ in cols], self._button(kind, key))
            cells, button = cache[key]
            for cell, c in zip(cells, cols):
                cell.value = html.escape(_cell(r.get(c)))
            if kind == "schedules":
                button.description = "Resume" if r["_paused"] else "Pause"
                button.disabled = closed
            else:
                button.disabled = closed or not r["_requeueable"]
            children += cells + [button]
        for key in set(cache) - keep:
            cells, button = cache.pop(key)
            for wdg in (*cells, button):
                wdg.close()
        grid = self.grids[kind]
        if tuple(children) != tuple(grid.children):
            grid.children = tuple(children)

    def _button(self, kind: str, key: str) -> Any:
        dash = self.dash
        if kind == "failed":
            b = self.w.Button(description="Requeue", button_style="warning", tooltip=f"requeue {key}",
                              layout=self.w.Layout(width="90px"))
            b.on_click(lambda _b: dash._requeue(key))
        else:
            b = self.w.Button(description="Pause", tooltip=f"pause or resume {key}",
                              layout=self.w.Layout(width="90px"))
            b.on_click(lambda btn: dash._toggle_schedule(key, pause=btn.description == "Pause"))
        b.add_class(f"naq-{kind}-button")
        return b
