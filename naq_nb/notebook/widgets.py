"""Live views of jobs and sweeps: :class:`JobDisplay` and :class:`SweepDisplay`.

Both are :class:`~naq_nb.notebook.display.LiveDisplay` outputs (widget view +
text/html + text/plain, updated in place, throttled). A sweep display keeps
its per-status counts incrementally and shows a bounded window (up to
``window`` failures and the ``window`` most recently changed points), so a
refresh costs the same at 10 or 10,000 points.
"""

from __future__ import annotations

import html
import reprlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from .display import LiveDisplay, install_display_hooks, uninstall_display_hooks

if TYPE_CHECKING:
    from ..client.future import JobFuture
    from .sweep import Sweep

__all__ = ["JobDisplay", "SweepDisplay", "show_job", "install_display_hooks", "uninstall_display_hooks",
           "short_repr", "status_summary"]

_TERMINAL = ("succeeded", "failed", "cancelled")
_ORDER = ("succeeded", "failed", "cancelled", "running", "retrying", "queued", "waiting", "scheduled")
_COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "cancelled": "#6d6d6d", "running": "#1565c0",
           "retrying": "#ef6c00"}
_BAR_STYLE = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 120, 120, 8, 8


def short_repr(value: Any, limit: int = 160) -> str:
    """A bounded one-line repr (results can be huge)."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not break the display
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_summary(counts: dict[str, int], n: int) -> str:
    """``12/12 succeeded`` or ``7/12 succeeded, 1 failed, 4 running``."""
    rest = [s for s in _ORDER[1:] if counts.get(s)] + sorted(s for s in counts if s not in _ORDER and counts[s])
    return ", ".join([f"{counts.get('succeeded', 0)}/{n} succeeded"] + [f"{counts[s]} {s}" for s in rest])


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _badge(status: str) -> str:
    return f"<span style='color:{_COLORS.get(status, '#555')};font-weight:bold'>{_esc(status)}</span>"


def _bar(fraction: float, color: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f"<div style='width:320px;height:10px;background:#e0e0e0;border-radius:3px;margin:3px 0'>"
            f"<div style='width:{pct:.1f}%;height:10px;background:{color};border-radius:3px'></div></div>")


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


def _duration(d: float | None) -> str:
    return "" if d is None else (f"{d:.3f} s" if d < 10 else f"{d:.1f} s")


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
        lines += [f"log: {x}" for x in f.logs[-self.logs:]]
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
        logs = f.logs[-self.logs:]
        if logs:
            parts.append("<pre style='margin:2px 0;max-height:10em;overflow:auto;font-size:85%'>"
                         + _esc("\n".join(logs)) + "</pre>")
        kind, value = _outcome(f)
        if kind == "result":
            parts.append(f"<div><b>result:</b> <code>{_esc(value)}</code></div>")
        elif kind:
            parts.append(f"<div style='color:{_COLORS['failed']}'><b>error:</b> {_esc(value)}</div>")
        return "".join(parts)

    def html(self) -> str:
        frac, _ = _progress(self.future)
        color = _COLORS.get(self.future.status, "#1565c0")
        return f"<div class='naq-job'>{self._head_html()}{_bar(frac, color)}{self._body_html()}</div>"

    def _widget_parts(self) -> tuple[str, float, str, str]:
        f = self.future
        return self._head_html(), _progress(f)[0], _BAR_STYLE.get(f.status, "info"), self._body_html()

def show_job(future: "JobFuture") -> JobDisplay:
    """Display ``future`` as a live :class:`JobDisplay` (the JobFuture display hook)."""
    return JobDisplay(future).show()  # type: ignore[return-value]


class SweepDisplay(_HeadBarBody):
    """A live view of a :class:`~naq_nb.notebook.sweep.Sweep`: progress bar, counts per status
    and a bounded table (up to ``window`` failures plus the ``window`` latest changes)."""

    def __init__(self, sweep: "Sweep", *, window: int = 20, **kw: Any) -> None:
        super().__init__(**kw)
        self.sweep = sweep
        self.window = window
        self._lock = threading.Lock()
        self._status = [f.status for f in sweep.futures]
        self.counts: dict[str, int] = {}
        for s in self._status:
            self.counts[s] = self.counts.get(s, 0) + 1
        self._recent: "OrderedDict[int, None]" = OrderedDict()
        self._failures: "OrderedDict[int, None]" = OrderedDict(
            (i, None) for i, s in enumerate(self._status) if s in ("failed", "cancelled"))

    @property
    def total(self) -> int:
        return len(self._status)

    def _ended(self) -> int:
        return sum(self.counts.get(s, 0) for s in _TERMINAL)

    def terminal(self) -> bool:
        with self._lock:
            return self._ended() == self.total

    def _subscribe(self) -> Callable[[], None]:
        unsub = self.sweep.on_update(lambda _sw, i: self.update(i))
        for i, f in enumerate(self.sweep.futures):
            if f.status != self._status[i]:
                self.update(i)  # changed before we listened
        return unsub

    def update(self, index: int) -> None:
        """Point ``index`` changed: adjust counts and window in O(1), then a throttled refresh."""
        new = self.sweep.futures[index].status
        with self._lock:
            old = self._status[index]
            if old != new:
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
                self.counts[new] = self.counts.get(new, 0) + 1
                self._status[index] = new
            if new in ("failed", "cancelled"):
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

    def _row(self, i: int) -> tuple[str, str, str, str]:
        f = self.sweep.futures[i]
        params = ", ".join(f"{k}={short_repr(v, 40)}" for k, v in self.sweep.points[i].items())
        kind, value = _outcome(f)
        return params, f.status, _duration(f.duration), value or _progress(f)[1]

    def text(self) -> str:
        sw = self.sweep
        lines = [f"naq sweep {sw.name} ({sw.id}) of {sw.function}: {self.summary()}"]
        for i in self.rows():
            params, status, dur, value = self._row(i)
            if status in ("failed", "cancelled"):
                lines.append(f"  [{i}] {params}: {status}" + (f" -> {value}" if value else ""))
        return "\n".join(lines)

    def _table_html(self) -> str:
        rows = self.rows()
        if not rows:
            return ""
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("#", "parameters", "status", "duration", "result / error"))
        body = []
        for i in rows:
            params, status, dur, value = self._row(i)
            body.append(f"<tr><td>{i}</td><td><code>{_esc(params)}</code></td><td>{_badge(status)}</td>"
                        f"<td>{_esc(dur)}</td><td style='text-align:left'>{_esc(value)}</td></tr>")
        note = (f"<div style='color:#666;font-size:85%'>showing {len(rows)} of {self.total} points "
                "(latest failures and changes)</div>")
        return f"<table class='naq-sweep-rows'><tr>{head}</tr>{''.join(body)}</table>{note}"

    def _head_html(self) -> str:
        sw = self.sweep
        return (f"<div><b>{_esc(sw.name)}</b> <code>{_esc(sw.id)}</code> "
                f"<span style='color:#666'>{_esc(sw.function)}</span>: {_esc(self.summary())}</div>")

    def _fraction(self) -> float:
        with self._lock:
            return self._ended() / self.total if self.total else 1.0

    def html(self) -> str:
        color = _COLORS["failed"] if self.counts.get("failed") else _COLORS["succeeded"]
        return (f"<div class='naq-sweep'>{self._head_html()}{_bar(self._fraction(), color)}"
                f"{self._table_html()}</div>")

    def _widget_parts(self) -> tuple[str, float, str, str]:
        frac = self._fraction()
        style = "danger" if self.counts.get("failed") else ("success" if frac >= 1 else "info")
        return self._head_html(), frac, style, self._table_html()
