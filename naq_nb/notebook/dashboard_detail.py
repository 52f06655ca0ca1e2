"""One job's details for the dashboard: read from the server, rendered as HTML."""

from __future__ import annotations

import html
import time
from typing import Any

from ..client.client import Client
from ..core.errors import JobNotFoundError
from ..core.queue import get_status
from ..core.results import get_result
from ..core.status import StatusRecord
from .fmt import clock_text, duration_text

__all__ = ["fetch_detail", "detail_html"]


async def fetch_detail(client: Client, job_id: str) -> tuple[StatusRecord, str]:
    """The job's status record and the worker's traceback (from its result, when it failed)."""
    b = await client.broker()
    try:
        rec = await get_status(b, job_id)
    except JobNotFoundError:
        rec = {}
    res = await get_result(b, job_id)
    tb = (res.meta.get("traceback") or "") if res is not None else ""
    return rec, tb or rec.get("traceback") or ""


def _when(t: Any) -> str:
    return f"{clock_text(t)} UTC" if isinstance(t, (int, float)) and t else "-"


def detail_html(job_id: str, rec: dict, traceback: str) -> str:
    """A small panel: function, status, arguments, times, attempts, logs, error and traceback."""
    start, end = rec.get("started_at"), rec.get("finished_at")
    dur = (end or time.time()) - start if isinstance(start, (int, float)) else None
    rows = [
        ("job", job_id),
        ("function", rec.get("func") or "?"),
        ("queue", rec.get("queue") or "?"),
        ("status", rec.get("status") or "unknown (expired?)"),
        ("arguments", rec.get("args") or "-"),
        ("worker", rec.get("worker") or "-"),
        ("enqueued", _when(rec.get("enqueued_at"))),
        ("started", _when(start)),
        ("finished", _when(end)),
        ("duration", duration_text(dur) or "-"),
        ("attempts", rec.get("attempts", "-")),
    ]
    if rec.get("progress") is not None:
        rows.append(("progress", f"{rec.get('progress')}/{rec.get('total')} {rec.get('message') or ''}"))
    cells = "".join(
        f"<tr><th style='text-align:left;padding-right:10px'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    parts = [
        f"<div class='naq-job-detail' style='border-left:3px solid #1565c0;padding:4px 10px;margin:6px 0'>"
        f"<b>Job {html.escape(job_id)}</b><table>{cells}</table>"
    ]
    pre = "<pre style='max-height:14em;overflow:auto;font-size:85%;background:#f5f5f5;padding:4px'>"
    # Status records are not checked when read: a field of another type is shown as its text.
    logs = rec.get("logs")
    if logs:
        text = "\n".join(map(str, logs)) if isinstance(logs, list) else str(logs)
        parts.append(f"<b>logs</b>{pre}{html.escape(text)}</pre>")
    if rec.get("error"):
        parts.append(f"<div style='color:#c62828'><b>error:</b> {html.escape(str(rec['error']))}</div>")
    if traceback:
        parts.append(f"<b>traceback</b>{pre}{html.escape(str(traceback))}</pre>")
    return "".join(parts) + "</div>"
