"""The running job's context: ``current_job()``, progress and log lines from inside a job.

A job's function can call :func:`progress` and :func:`log` (also from a sync
function in a worker thread); updates are coalesced and written to the job's
status record at most every ``min_interval`` seconds, so a tight loop of calls
costs no KV write per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .status import StatusRecord

__all__ = ["JobContext", "current_job", "progress", "log", "echo_line", "LineSplitter", "bounded_line", "MAX_LINE"]

#: Characters a log line or a progress message keeps (its start). A job's status record carries its
#: last 50 lines and its message, and must fit one NATS message: uncut, one long line (a progress
#: bar redrawn 10,000 times without a newline) made every write of the record fail.
MAX_LINE = 2_000
#: A status record's log lines get at most max_payload / LOG_SHARE characters: escaped to JSON, a
#: character may take up to 12 bytes, and the record must still fit one NATS message.
LOG_SHARE = 24

_current: contextvars.ContextVar["JobContext | None"] = contextvars.ContextVar("naq_job", default=None)


@dataclass
class JobContext:
    job_id: str
    queue: str
    attempt: int
    loop: asyncio.AbstractEventLoop
    flush: Callable[["JobContext"], Any]  # coroutine function writing the status record
    min_interval: float = 0.2
    progress_done: float | None = None
    progress_total: float | None = None
    message: str | None = None
    logs: list[str] = field(default_factory=list)
    max_log_lines: int = 200
    on_line: Callable[[str, str], None] | None = None  # (job id, line): echo output to the worker's terminal
    # The runner's current status record, which flushes update.
    record: StatusRecord = field(default_factory=lambda: StatusRecord())
    _scheduled: bool = False
    _closed: bool = False
    _last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(
        self, done: float | None = None, total: float | None = None, message: str | None = None, line: str | None = None
    ) -> None:
        with self._lock:
            if done is not None:
                self.progress_done = done
            if total is not None:
                self.progress_total = total
            if message is not None:
                self.message = bounded_line(message)
            if line is not None:
                line = bounded_line(line)
                self.logs.append(line)
                del self.logs[: -self.max_log_lines]
            scheduled, self._scheduled = self._scheduled, True
        if line is not None and self.on_line is not None:
            self.on_line(self.job_id, line)
        if scheduled:
            return
        try:
            self.loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # loop closed: the worker is gone
            pass

    def _schedule(self) -> None:
        delay = max(0.0, self._last + self.min_interval - time.monotonic())
        self.loop.call_later(delay, lambda: asyncio.ensure_future(self._write()))

    def close(self) -> None:
        """The job has ended: a progress write still pending must not follow its final status."""
        with self._lock:
            self._closed = True

    async def _write(self) -> None:
        with self._lock:
            self._scheduled = False
            self._last = time.monotonic()
            if self._closed:
                return
        try:
            await self.flush(self)
        except Exception:
            pass  # progress is best effort; the job goes on

    def snapshot(self, max_payload: int = 1 << 62) -> dict[str, Any]:
        """Progress, message and the last 50 log lines, fewer (and the message cut) where their
        characters would pass ``max_payload / LOG_SHARE`` (the record must fit one NATS message)."""
        budget = max_payload // LOG_SHARE
        with self._lock:
            logs, size = [], 0
            for line in reversed(self.logs[-50:]):
                size += len(line) + 4
                if size > budget:
                    break
                logs.append(line)
            logs.reverse()
            message = self.message
            if message is not None and len(message) > budget:  # a small max_payload: the record must still fit
                message = message[: max(budget - 3, 0)] + "..."
            return {"progress": self.progress_done, "total": self.progress_total, "message": message, "logs": logs}


def current_job() -> JobContext | None:
    """The context of the job running in this task or thread, or None outside a job."""
    return _current.get()


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report progress of the current job (no-op outside a job)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.update(done=done, total=total, message=message)


def log(*parts: Any) -> None:
    """Add a log line to the current job's display (printed when outside a job)."""
    text = " ".join(str(p) for p in parts)
    ctx = _current.get()
    if ctx is None:
        print(text)
    else:
        ctx.update(line=text)


def echo_line(job_id: str, line: str) -> None:
    """Write a job's output line to the worker's own stdout, prefixed with the job id."""
    out = sys.stdout
    out = getattr(out, "original", out)  # past the capture, which would route it back to the job
    try:
        out.write(f"[{job_id}] {line}\n")
        out.flush()
    except (OSError, ValueError):  # a closed terminal must not fail the job
        pass


def bind(ctx: JobContext) -> contextvars.Token:
    return _current.set(ctx)


def unbind(token: contextvars.Token) -> None:
    _current.reset(token)


def bounded_line(text: str, dropped: int = 0) -> str:
    """``text`` as a log line or message shows it: a line redrawn in place (carriage returns, as a
    progress bar does) as its last state, at most :data:`MAX_LINE` characters of it. ``dropped``:
    characters of its start already let go (gone with the rest if the line was redrawn since)."""
    if "\r" in text:
        text = text.rstrip("\r")  # ("\r\n" endings)
        redraw = text.rfind("\r")
        if redraw >= 0:
            text, dropped = text[redraw + 1 :], 0
    if len(text) <= MAX_LINE and not dropped:
        return text
    keep = MAX_LINE - 40  # room for the note: a line cut once is not cut again
    return f"{text[:keep]}... ({len(text) - keep + dropped:,} more characters)"


class LineSplitter:
    """Text written in pieces, given back as whole lines (each after ``prefix``). Each piece costs its
    own length: nothing already buffered is joined again per write (a progress bar's thousands of
    redraws without a newline made that quadratic), and a line that never ends holds at most a few
    MAX_LINE of memory."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._parts: list[str] = []
        self._size = 0
        self._dropped = 0  # characters of the unfinished line let go (past MAX_LINE)

    def feed(self, text: str) -> list[str]:
        if "\n" not in text:
            self._parts.append(text)
            self._size += len(text)
            if self._size > 4 * MAX_LINE:
                self._compact()
            return []
        head, *more = text.split("\n")
        self._parts.append(head)
        lines = [self._take(), *(self.prefix + bounded_line(line) for line in more[:-1])]
        if more[-1]:
            self._parts, self._size = [more[-1]], len(more[-1])
        return lines

    def take_rest(self) -> str | None:
        """The unfinished line as it shows (None if there is none); the buffer is emptied."""
        return self._take() if self._parts and any(self._parts) else None

    def _take(self) -> str:
        line = bounded_line("".join(self._parts), self._dropped)
        self._parts, self._size, self._dropped = [], 0, 0
        return self.prefix + line

    def _compact(self) -> None:
        text = "".join(self._parts)
        redraw = text.rfind("\r", 0, len(text) - 1)  # a redraw drops what came before it
        if redraw >= 0:
            text, self._dropped = text[redraw + 1 :], 0
        if len(text) > MAX_LINE + 1:  # (one more: a "\r" ending stays seen as one)
            self._dropped += len(text) - MAX_LINE - 1
            text = text[: MAX_LINE + 1]
        self._parts, self._size = [text], len(text)


def stream_prefix(label: str) -> str:
    """What a job's log line written to stream ``label`` starts with: nothing for stdout."""
    return "" if label == "stdout" else f"[{label}] "


class _CaptureStream:
    """Stands in for sys.stdout/stderr while a worker runs: text written inside a job
    (any thread or task bound to a JobContext) goes to that job's log lines; anything
    else goes to the original stream. A job's unfinished last line is logged when it ends
    (:func:`end_job_output`)."""

    def __init__(self, original: Any, label: str) -> None:
        self.original = original
        self._prefix = stream_prefix(label)
        self._partial: dict[int, tuple[JobContext, LineSplitter]] = {}  # by id(ctx): a retry has its own
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        ctx = _current.get()
        if ctx is None:
            return self.original.write(text)
        with self._lock:
            entry = self._partial.get(id(ctx))
            if entry is None:
                entry = (ctx, LineSplitter(self._prefix))
                if not ctx._closed:  # a job that ended (a thread past its timeout) keeps no entry for ever
                    self._partial[id(ctx)] = entry
            done = entry[1].feed(text)
        for line in done:
            ctx.update(line=line)
        return len(text)

    def end_job(self, ctx: JobContext) -> None:
        with self._lock:
            entry = self._partial.pop(id(ctx), None)
        rest = entry[1].take_rest() if entry is not None else None
        if rest is not None:
            ctx.update(line=rest)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_capture_refs = 0
_capture_lock = threading.Lock()


def install_capture() -> None:
    """Route job output to job logs (reference counted; undone by :func:`uninstall_capture`)."""
    global _capture_refs
    with _capture_lock:
        _capture_refs += 1
        # Someone (a test runner, IPython) may have swapped the streams since: wrap whatever is there.
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _CaptureStream):
                setattr(sys, name, _CaptureStream(stream, name))


def end_job_output(ctx: JobContext) -> None:
    """Log the unfinished last line ``ctx``'s job printed (threads mode), and forget it."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _CaptureStream) and stream._partial:  # (most jobs leave none)
            stream.end_job(ctx)


def uninstall_capture() -> None:
    global _capture_refs
    with _capture_lock:
        _capture_refs = max(0, _capture_refs - 1)
        if _capture_refs == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, _CaptureStream):
                    setattr(sys, name, stream.original)
