"""Small formatting helpers shared by the displays, sweeps, frames and the dashboard (no imports of theirs)."""

from __future__ import annotations

import html
import math
import reprlib
import time
from typing import Any, Iterable

from ..core.status import FAILED_STATES, TERMINAL_VALUES

__all__ = [
    "clock_text",
    "TERMINAL",
    "FAILED",
    "ORDER",
    "COLORS",
    "short_repr",
    "short_value",
    "status_summary",
    "esc",
    "duration_text",
    "stacked_bar",
    "rate_text",
    "eta_text",
]

TERMINAL = TERMINAL_VALUES
FAILED = FAILED_STATES
ORDER = ("succeeded", "failed", "cancelled", "running", "retrying", "queued", "waiting", "scheduled")
COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#8d8d8d",
    "running": "#1565c0",
    "retrying": "#ef6c00",
    "queued": "#cfd8dc",
    "waiting": "#e0e0e0",
    "scheduled": "#e0e0e0",
}
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


def short_value(value: Any, limit: int = 40) -> str:
    """A parameter as a person writes it: ``2.842`` not ``2.8421052631578947``."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return short_repr(value, limit)


def status_summary(counts: dict[str, int], n: int) -> str:
    """``12/12 succeeded`` or ``7/12 succeeded, 1 failed, 4 running``."""
    rest = [s for s in ORDER[1:] if counts.get(s)] + sorted(s for s in counts if s not in ORDER and counts[s])
    return ", ".join([f"{counts.get('succeeded', 0)}/{n} succeeded"] + [f"{counts[s]} {s}" for s in rest])


def esc(v: Any) -> str:
    """HTML-escaped ``str(v)``."""
    return html.escape(str(v))


def duration_text(d: float | None) -> str:
    """``0.123 s`` below 10 s, ``12.3 s`` below 100 s, then ``3m 05s``; ``""`` for None."""
    if d is None:
        return ""
    if d < 10:
        return f"{d:.3f} s"
    if d < 100:
        return f"{d:.1f} s"
    m, s = divmod(int(round(d)), 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


def clock_text(t: float) -> str:
    """An epoch time as ``HH:MM:SS`` in UTC (the displays say "UTC" where it is not obvious)."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def rate_text(per_second: float) -> str:
    """``12.5 jobs/s`` or ``3.0 jobs/min`` for slow work."""
    if per_second >= 1 or per_second == 0:
        return f"{per_second:.1f} jobs/s"
    return f"{per_second * 60:.1f} jobs/min"


def eta_text(remaining: int, per_second: float) -> str:
    """``ETA 12 s`` from the work left and the rate so far; ``""`` when unknown."""
    if remaining <= 0 or per_second <= 0:
        return ""
    return f"ETA {duration_text(remaining / per_second)}"


def stacked_bar(counts: dict[str, int], total: int, order: Iterable[str] = ORDER, width: int = 320) -> str:
    """One bar, a segment per status in ``order`` sized by its count (not one colour for everything)."""
    segs = []
    for s in order:
        n = counts.get(s, 0)
        if n and total:
            segs.append(
                f"<div title='{n} {esc(s)}' style='width:{100.0 * n / total:.2f}%;height:10px;"
                f"background:{COLORS.get(s, '#bdbdbd')}'></div>"
            )
    return (
        f"<div class='naq-bar' style='display:flex;width:{width}px;height:10px;background:#eceff1;"
        f"border-radius:3px;overflow:hidden;margin:3px 0'>{''.join(segs)}</div>"
    )
