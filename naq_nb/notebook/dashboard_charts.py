"""The dashboard's pictures as plain inline SVG/HTML (no plotting library, no JavaScript).

Inline SVG renders the same in a live widget, in a saved notebook, on GitHub's
notebook viewer and in Voilà, and costs a few kB. Three pictures, after what
helps most in Flower's and dask's dashboards:

* :func:`line_chart`: one or more series over the last minutes (throughput,
  queue depth), with the latest value in the legend;
* :func:`task_stream`: one lane per worker, one bar per job from start to end,
  coloured by status (dask's task stream);
* :func:`load_bars`: per worker, running jobs against its slots.
"""

from __future__ import annotations

import html
import time
from typing import Iterable

from .fmt import COLORS

__all__ = ["line_chart", "task_stream", "load_bars", "SERIES_COLORS"]

SERIES_COLORS = ("#1565c0", "#2e7d32", "#c62828", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037")
_FONT = "font-family:sans-serif;font-size:10px"


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    span: float,
    now: float | None = None,
    width: int = 360,
    height: int = 120,
    unit: str = "",
) -> str:
    """An SVG line chart of ``series`` (name -> [(epoch t, value)]) over the last ``span`` seconds."""
    now = time.time() if now is None else now
    left, right, top, bottom = 34, 8, 16, 16
    w, h = width - left - right, height - top - bottom
    vmax = max([v for pts in series.values() for _, v in pts] + [1.0])
    parts = [
        f"<svg class='naq-chart' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg' "
        f"style='background:#fafafa;border:1px solid #e0e0e0;border-radius:3px'>",
        f"<text x='{left}' y='11' style='{_FONT};font-weight:bold'>{html.escape(title)}</text>",
    ]
    for frac in (0.0, 0.5, 1.0):  # grid lines with their values
        y = top + h * (1 - frac)
        parts.append(
            f"<line x1='{left}' y1='{y:.1f}' x2='{left + w}' y2='{y:.1f}' stroke='#e0e0e0'/>"
            f"<text x='{left - 3}' y='{y + 3:.1f}' text-anchor='end' style='{_FONT}'>"
            f"{_fmt(vmax * frac)}</text>"
        )
    parts.append(
        f"<text x='{left}' y='{height - 3}' style='{_FONT}'>-{span / 60:g} min</text>"
        f"<text x='{left + w}' y='{height - 3}' text-anchor='end' style='{_FONT}'>now</text>"
    )
    legend_x = left + 8 + 7 * len(title)
    for i, (name, pts) in enumerate(series.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        xy = [(left + w * (1 - (now - t) / span), top + h * (1 - v / vmax)) for t, v in pts if now - t <= span]
        if len(xy) >= 2:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{path}'/>")
        last = pts[-1][1] if pts else 0.0
        parts.append(
            f"<text x='{legend_x}' y='11' fill='{color}' style='{_FONT}'>"
            f"{html.escape(name)} {_fmt(last)}{html.escape(unit)}</text>"
        )
        legend_x += 12 + 6 * (len(name) + len(_fmt(last)) + len(unit))
    parts.append("</svg>")
    return "".join(parts)


def _pack(jobs: list[dict], now: float) -> list[tuple[int, dict, float, float]]:
    """Jobs of one worker onto sub-lanes (its slots): each job on the first lane free at its start."""
    ends: list[float] = []
    out = []
    for j in sorted(jobs, key=lambda j: j["started_at"]):
        start = j["started_at"]
        end = j["finished_at"] if isinstance(j.get("finished_at"), (int, float)) else now
        lane = next((i for i, e in enumerate(ends) if e <= start), None)
        if lane is None:
            lane = len(ends)
            ends.append(end)
        else:
            ends[lane] = end
        out.append((lane, j, start, end))
    return out


def task_stream(
    jobs: Iterable[dict],
    lanes: list[str],
    span: float,
    now: float | None = None,
    width: int = 740,
    lane_height: int = 12,
    max_slots: int = 8,
) -> str:
    """One band per worker, a lane per busy slot; a bar per job from start to end (or now), by status."""
    now = time.time() if now is None else now
    by_worker: dict[str, list[dict]] = {name: [] for name in lanes}
    for j in jobs:
        if isinstance(j.get("started_at"), (int, float)) and j.get("worker") in by_worker:
            by_worker[j["worker"]].append(j)
    packed = {name: _pack(js, now) for name, js in by_worker.items()}
    rows = {name: min(max_slots, 1 + max((p[0] for p in ps), default=0)) for name, ps in packed.items()}
    left, top = 110, 4
    w = width - left - 6
    height = top + lane_height * max(1, sum(rows.values())) + 16
    parts = [
        f"<svg class='naq-task-stream' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg' "
        f"style='background:#fafafa;border:1px solid #e0e0e0;border-radius:3px'>"
    ]
    y0 = top
    for name in lanes:
        parts.append(f"<text x='4' y='{y0 + lane_height - 2}' style='{_FONT}'>{html.escape(name[:18])}</text>")
        for lane, j, start, end in packed[name]:
            if end < now - span or lane >= max_slots:
                continue
            x0 = left + w * max(0.0, 1 - (now - start) / span)
            x1 = left + w * (1 - (now - end) / span)
            tip = html.escape(f"{j.get('func')} {j.get('id')} {j.get('status')} {end - start:.2f}s")
            parts.append(
                f"<rect x='{x0:.1f}' y='{y0 + lane * lane_height + 1}' width='{max(1.5, x1 - x0):.1f}' "
                f"height='{lane_height - 2}' stroke='#fafafa' stroke-width='0.6' "
                f"fill='{COLORS.get(j.get('status', ''), '#90a4ae')}'><title>{tip}</title></rect>"
            )
        y0 += lane_height * rows[name]
        parts.append(f"<line x1='0' y1='{y0}' x2='{width}' y2='{y0}' stroke='#e0e0e0'/>")
    parts.append(
        f"<text x='{left}' y='{height - 3}' style='{_FONT}'>-{span / 60:g} min</text>"
        f"<text x='{width - 6}' y='{height - 3}' text-anchor='end' style='{_FONT}'>now</text></svg>"
    )
    return "".join(parts)


def load_bars(rows: list[dict]) -> str:
    """Per worker: ``running / slots`` as a bar, plus its processed and failed counts."""
    if not rows:
        return "<p><i>no live worker</i></p>"
    out = ["<table class='naq-load'>"]
    for r in rows:
        slots = max(1, int(r.get("concurrency") or 1))
        busy = min(slots, int(r.get("running_n") or 0))
        pct = 100.0 * busy / slots
        out.append(
            f"<tr><td style='text-align:left;padding-right:10px'>{html.escape(str(r.get('worker_id')))}</td>"
            f"<td><div style='width:160px;height:10px;background:#eceff1;border-radius:3px'>"
            f"<div style='width:{pct:.0f}%;height:10px;background:{COLORS['running']};border-radius:3px'>"
            f"</div></div></td><td style='text-align:left;padding-left:8px'>{busy}/{slots} busy · "
            f"{r.get('processed', 0)} done · {r.get('failed', 0)} failed · "
            f"{html.escape(str(r.get('state') or ''))}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)
