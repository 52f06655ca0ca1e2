"""The running job's context: ``current_job()``, progress and log lines from inside a job.

A job's function can call :func:`progress` and :func:`log` (also from a sync
function in a worker thread); updates are coalesced and written to the job's
status record at most every ``min_interval`` seconds, so a tight loop of calls
costs no KV write per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .status import StatusRecord

__all__ = ["JobContext", "current_job", "progress", "log", "echo_line"]

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
                self.message = message
            if line is not None:
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

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "progress": self.progress_done,
                "total": self.progress_total,
                "message": self.message,
                "logs": list(self.logs[-50:]),
            }


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
    import sys

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


class _CaptureStream:
    """Stands in for sys.stdout/stderr while a worker runs: text written inside a job
    (any thread or task bound to a JobContext) goes to that job's log lines; anything
    else goes to the original stream."""

    def __init__(self, original: Any, label: str) -> None:
        self.original = original
        self.label = label
        self._partial: dict[str, str] = {}

    def write(self, text: str) -> int:
        ctx = _current.get()
        if ctx is None:
            return self.original.write(text)
        buf = self._partial.get(ctx.job_id, "") + text
        *lines, rest = buf.split("\n")
        self._partial[ctx.job_id] = rest
        for line in lines:
            ctx.update(line=line if self.label == "stdout" else f"[stderr] {line}")
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_capture_refs = 0
_capture_lock = threading.Lock()


def install_capture() -> None:
    """Route job output to job logs (reference counted; undone by :func:`uninstall_capture`)."""
    import sys

    global _capture_refs
    with _capture_lock:
        _capture_refs += 1
        # Someone (a test runner, IPython) may have swapped the streams since: wrap whatever is there.
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _CaptureStream):
                setattr(sys, name, _CaptureStream(stream, name))


def uninstall_capture() -> None:
    import sys

    global _capture_refs
    with _capture_lock:
        _capture_refs = max(0, _capture_refs - 1)
        if _capture_refs == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, _CaptureStream):
                    setattr(sys, name, stream.original)
