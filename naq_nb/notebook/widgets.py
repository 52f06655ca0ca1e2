"""Live views of jobs and groups of jobs: :class:`JobDisplay` and :class:`GroupDisplay`.

Both are :class:`~naq_nb.notebook.display.LiveDisplay` outputs (widget view +
text/html + text/plain, updated in place, throttled, static once final). A
group display (``nq.map``'s JobGroup, a sweep) keeps its per-status counts
incrementally and shows a bounded window (up to ``window`` failures and the
``window`` most recently changed points), so a refresh costs the same at 10 or
10,000 points. :func:`install_display_hooks` makes a JobFuture or JobGroup shown
in a cell one of these (the client layer calls its ``display_hook``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from .display import LiveDisplay, ipython_shell, register_cell_hooks, unregister_cell_hooks
from .fmt import (
    COLORS,
    FAILED,
    TERMINAL,
    duration_text,
    esc,
    eta_text,
    rate_text,
    short_repr,
    stacked_bar,
    status_summary,
)

if TYPE_CHECKING:
    from ..client.future import JobFuture

__all__ = [
    "JobDisplay",
    "GroupDisplay",
    "SweepDisplay",
    "show_job",
    "install_display_hooks",
    "uninstall_display_hooks",
    "short_repr",
    "status_summary",
]

_BAR_STYLE = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}
_esc = esc


def _badge(status: str) -> str:
    return f"<span style='color:{COLORS.get(status, '#555')};font-weight:bold'>{_esc(status)}</span>"


def _bar(fraction: float, color: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f"<div style='width:320px;height:10px;background:#e0e0e0;border-radius:3px;margin:3px 0'>"
        f"<div style='width:{pct:.1f}%;height:10px;background:{color};border-radius:3px'></div></div>"
    )


def _outcome(f: "JobFuture") -> tuple[str, str]:
    """``("result", repr)`` / ``("error", message)`` for an ended job, else ``("", "")``."""
    if not f.done():
        return "", ""
    if f.cancelled():
        return "error", "cancelled"
    exc = f.exception(0)
    if exc is not None:
        return "error", str(f.record.get("error") or f"{type(exc).__name__}: {exc}")
    return "result", short_repr(f.result(0))


_duration = duration_text


def _progress(f: "JobFuture") -> tuple[float, str]:
    """(fraction done, "3/10 message") from the job's progress reports."""
    if f.status == "succeeded":
        return 1.0, ""
    p = f.progress or {}
    done, total, msg = p.get("done"), p.get("total"), str(p.get("message") or "")
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, done / total)), f"{done:g}/{total:g} {msg}".strip()
    return 0.0, msg


class _HeadBarBody(LiveDisplay):
    """The widget of both displays: a head line, a progress bar and a body, from ``_widget_parts()``."""

    def _widget_parts(self) -> tuple[str, float, str, str]:
        raise NotImplementedError

    def _make_widget(self) -> Any:
        import ipywidgets as w

        self._w_head = w.HTML()
        self._w_bar = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="320px"))
        self._w_body = w.HTML()
        return w.VBox([self._w_head, self._w_bar, self._w_body])

    def _update_widget(self) -> None:
        head, frac, style, body = self._widget_parts()
        self._w_head.value, self._w_bar.value, self._w_bar.bar_style, self._w_body.value = head, frac, style, body


class JobDisplay(_HeadBarBody):
    """A live view of one :class:`~naq_nb.client.future.JobFuture`: status, progress bar, message,
    the last ``logs`` log lines, then the result or the error."""

    def __init__(self, future: "JobFuture", *, logs: int = 5, **kw: Any) -> None:
        super().__init__(**kw)
        self.future = future
        self.logs = logs

    def terminal(self) -> bool:
        return self.future.done()

    def _subscribe(self) -> Callable[[], None]:
        return self.future.on_update(lambda _f: self.poke())

    def text(self) -> str:
        f = self.future
        head = f"naq job {f.name} ({f.job_id}): {f.status}"
        if f.done() and f.duration is not None:
            head += f" in {_duration(f.duration)}"
        lines = [head]
        _, prog = _progress(f)
        if prog and not f.done():
            lines.append(f"progress: {prog}")
        lines += [f"log: {x}" for x in f.logs[-self.logs :]]
        kind, value = _outcome(f)
        if kind:
            lines.append(f"{kind}: {value}")
        return "\n".join(lines)

    def _head_html(self) -> str:
        f = self.future
        d = f" <span style='color:#666'>{_esc(_duration(f.duration))}</span>" if f.duration is not None else ""
        return f"<div><b>{_esc(f.name)}</b> <code>{_esc(f.job_id)}</code> {_badge(f.status)}{d}</div>"

    def _body_html(self) -> str:
        f = self.future
        parts = []
        _, prog = _progress(f)
        if prog and not f.done():
            parts.append(f"<div style='color:#444'>{_esc(prog)}</div>")
        logs = f.logs[-self.logs :]
        if logs:
            parts.append(
                "<pre style='margin:2px 0;max-height:10em;overflow:auto;font-size:85%'>"
                + _esc("\n".join(logs))
                + "</pre>"
            )
        kind, value = _outcome(f)
        if kind == "result":
            parts.append(f"<div><b>result:</b> <code>{_esc(value)}</code></div>")
        elif kind:
            parts.append(f"<div style='color:{COLORS['failed']}'><b>error:</b> {_esc(value)}</div>")
        return "".join(parts)

    def html(self) -> str:
        frac, _ = _progress(self.future)
        color = COLORS.get(self.future.status, "#1565c0")
        return f"<div class='naq-job'>{self._head_html()}{_bar(frac, color)}{self._body_html()}</div>"

    def _widget_parts(self) -> tuple[str, float, str, str]:
        f = self.future
        return self._head_html(), _progress(f)[0], _BAR_STYLE.get(f.status, "info"), self._body_html()


def show_job(obj: Any) -> LiveDisplay:
    """The display hook of the client layer: a JobFuture becomes a live :class:`JobDisplay`,
    a group of futures (``nq.map``'s handle, a sweep) a live :class:`GroupDisplay`."""
    if hasattr(obj, "futures") and hasattr(obj, "on_update"):
        return GroupDisplay(obj).show()
    return JobDisplay(obj).show()


def install_display_hooks(shell: Any | None = None) -> bool:
    """A JobFuture or job group shown in a cell becomes a live display; displays are flushed after each cell.

    Idempotent; returns False outside IPython (only the client's display hook is set then).
    """
    from ..client import future as future_mod

    future_mod.display_hook = show_job
    return register_cell_hooks(shell or ipython_shell())


def uninstall_display_hooks(shell: Any | None = None) -> None:
    """Undo :func:`install_display_hooks`."""
    from ..client import future as future_mod

    if future_mod.display_hook is show_job:
        future_mod.display_hook = None
    unregister_cell_hooks(shell)


class GroupDisplay(LiveDisplay):
    """A live view of many jobs: ``nq.map``'s handle or a :class:`~naq_nb.notebook.sweep.Sweep`.

    One stacked bar by status, counts, throughput and ETA while it runs, and a
    bounded table (up to ``window`` failures plus the ``window`` latest
    changes). Once every job ended it collapses to the summary plus the first
    failures. The group gives ``futures``, ``on_update(cb(group, index))``,
    ``name``, ``id``, ``function`` and ``label(index)`` (the point's arguments).
    """

    def __init__(self, group: Any, *, window: int = 20, **kw: Any) -> None:
        super().__init__(**kw)
        self.group = group
        self.window = window
        self._lock = threading.Lock()
        self._status = [f.status for f in group.futures]
        self.counts: dict[str, int] = {}
        for s in self._status:
            self.counts[s] = self.counts.get(s, 0) + 1
        self._recent: "OrderedDict[int, None]" = OrderedDict()
        self._failures: "OrderedDict[int, None]" = OrderedDict(
            (i, None) for i, s in enumerate(self._status) if s in FAILED
        )
        created = getattr(group, "created", None)  # throughput counts from submission, not from display
        self._t0 = created if isinstance(created, (int, float)) else time.time()
        self._t_end: float | None = None
        if self._ended() == self.total:  # shown after the fact: ended when its last job did
            ends = [f.record.get("finished_at") for f in group.futures]
            self._t_end = max([e for e in ends if isinstance(e, (int, float))], default=time.time())

    @property
    def sweep(self) -> Any:
        """The group shown (kept under its old name)."""
        return self.group

    @property
    def total(self) -> int:
        return len(self._status)

    def _ended(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    def terminal(self) -> bool:
        with self._lock:
            return self._ended() == self.total

    def _subscribe(self) -> Callable[[], None]:
        unsub = self.group.on_update(lambda _g, i: self.update(i))
        for i, f in enumerate(self.group.futures):
            if f.status != self._status[i]:
                self.update(i)  # changed before we listened
        return unsub

    def update(self, index: int) -> None:
        """Point ``index`` changed: adjust counts and window in O(1), then a throttled refresh."""
        new = self.group.futures[index].status
        with self._lock:
            old = self._status[index]
            if old != new:
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
                self.counts[new] = self.counts.get(new, 0) + 1
                self._status[index] = new
            if new in FAILED:
                self._failures[index] = None
                self._failures.move_to_end(index)
                while len(self._failures) > self.window:
                    self._failures.popitem(last=False)
            else:
                self._failures.pop(index, None)
            self._recent[index] = None
            self._recent.move_to_end(index)
            while len(self._recent) > self.window:
                self._recent.popitem(last=False)
            ended = self._ended() == self.total
            self._t_end = (self._t_end or time.time()) if ended else None
        self.poke()

    def rows(self) -> list[int]:
        """Point indices shown: the latest failures, then the latest other changes (newest last)."""
        with self._lock:
            fails = list(self._failures)
            return fails + [i for i in self._recent if i not in self._failures]

    def summary(self) -> str:
        """E.g. ``"10/12 succeeded, 1 failed, 1 running"``."""
        with self._lock:
            counts = dict(self.counts)
        return status_summary(counts, self.total)

    def pace(self) -> str:
        """``12.5 jobs/s, ETA 3.2 s`` while running; ``in 4.1 s (12.5 jobs/s)`` when done."""
        with self._lock:
            ended, end = self._ended(), self._t_end
        elapsed = max(1e-6, (end or time.time()) - self._t0)
        rate = ended / elapsed
        if end is not None:
            return f"in {duration_text(elapsed)} ({rate_text(rate)})"
        if not ended:
            return ""
        eta = eta_text(self.total - ended, rate)
        return rate_text(rate) + (f", {eta}" if eta else "")

    def _row(self, i: int) -> tuple[str, str, str, str]:
        f = self.group.futures[i]
        kind, value = _outcome(f)
        return self.group.label(i), f.status, _duration(f.duration), value or _progress(f)[1]

    def _title(self) -> str:
        g = self.group
        return f"{g.name} ({g.id}) of {g.function}"

    def text(self) -> str:
        pace = self.pace()
        lines = [f"naq {self.kind} {self._title()}: {self.summary()}" + (f"; {pace}" if pace else "")]
        shown = 0
        for i in self.rows():
            params, status, _dur, value = self._row(i)
            if status in FAILED and shown < (5 if self.terminal() else self.window):
                shown += 1
                lines.append(f"  [{i}] {params}: {status}" + (f" -> {value}" if value else ""))
        return "\n".join(lines)

    @property
    def kind(self) -> str:
        """``sweep`` or ``map`` (the group's ``kind``)."""
        return getattr(self.group, "kind", "sweep")

    def _table_html(self, rows: list[int]) -> str:
        if not rows:
            return ""
        head = "".join(
            f"<th style='text-align:left'>{h}</th>" for h in ("#", "arguments", "status", "duration", "result / error")
        )
        body = []
        for i in rows:
            params, status, dur, value = self._row(i)
            body.append(
                f"<tr><td>{i}</td><td><code>{_esc(params)}</code></td><td>{_badge(status)}</td>"
                f"<td>{_esc(dur)}</td><td style='text-align:left'>{_esc(short_repr(value, 80))}</td></tr>"
            )
        return f"<table class='naq-sweep-rows'><tr>{head}</tr>{''.join(body)}</table>"

    def _head_html(self) -> str:
        g = self.group
        pace = self.pace()
        return (
            f"<div><b>{_esc(g.name)}</b> <code>{_esc(g.id)}</code> "
            f"<span style='color:#666'>{_esc(g.function)}</span>: {_esc(self.summary())}"
            + (f" <span style='color:#666'>· {_esc(pace)}</span>" if pace else "")
            + "</div>"
        )

    def html(self) -> str:
        with self._lock:
            counts = dict(self.counts)
        bar = stacked_bar(counts, self.total)
        if self.terminal():  # collapsed: the first failures, the rest one click away
            fails = [i for i in self.rows() if self._status[i] in FAILED]
            body = ""
            if fails:
                n_failed = counts.get("failed", 0) + counts.get("cancelled", 0)
                body = (
                    f"<details><summary>{n_failed} failed: show {len(fails)}</summary>"
                    f"{self._table_html(fails)}</details>"
                )
            return f"<div class='naq-sweep naq-done'>{self._head_html()}{bar}{body}</div>"
        rows = self.rows()
        note = (
            (
                f"<div style='color:#666;font-size:85%'>showing {len(rows)} of {self.total} points "
                "(latest failures and changes)</div>"
            )
            if rows
            else ""
        )
        return f"<div class='naq-sweep'>{self._head_html()}{bar}{self._table_html(rows)}{note}</div>"

    def _make_widget(self) -> Any:
        import ipywidgets as w

        return w.HTML()

    def _update_widget(self) -> None:
        self.widget.value = self.html()


SweepDisplay = GroupDisplay  # the name sweeps used before groups
