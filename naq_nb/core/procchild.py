"""The child side of the process pool: one job at a time, for as long as it lives.

Started by :mod:`naq_nb.core.procpool` through :mod:`naq_nb.core.procmain`
(with the crash-log path). The protocol runs over the child's original stdin/stdout,
which are moved to private descriptors at start: stdin then reads /dev/null
(a job calling ``input()`` gets EOF, not the protocol) and stdout points at
stderr (C-level prints can't corrupt the protocol). Each frame is a 4-byte
big-endian length and a pickled tuple.

Parent -> child: ``("init", serializer, sys_path, cwd)`` once, then
``("run", job_id, queue, attempt, body, sys_path|None, objects, report_start)`` per job, where
``objects`` lists ``(sha256, size)`` of the body's ``nq.put`` values: their pickled
bytes follow the frame raw, back to back (no pickling of big bytes on either side),
and the child unpickles them while it decodes the body.
Child -> parent: ``("ready", pid)``; per job, with ``report_start``, ``("started",)`` once the
body is decoded (the function's module imported, the arguments unpickled) and its sync function
is about to be called: a job's timeout counts from there. Then any number of
``("progress", done, total, message, lines)``, then exactly one of
``("ok", payload)`` (the value serialized with the job serializer: the worker
stores it as is), ``("async",)`` (an async function: the worker runs it on
its loop) or ``("error", kind, exc_bytes, error, traceback, type_names)`` with
kind ``"decode"``, ``"job"`` or ``"result"``.

The child catches every exception of the job, ``SystemExit`` and
``KeyboardInterrupt`` included, and reports it; anything that ends the process
(a signal, ``os._exit``) is seen by the parent as the pipe closing.
"""

from __future__ import annotations

import faulthandler
import inspect
import os
import pickle
import signal
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

from . import context
from .context import LineSplitter, bounded_line, stream_prefix
from .errors import SerializationError
from .jobstate import JobProcessState

_LEN = struct.Struct(">I")


def read_frame(f: BinaryIO) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    n = _LEN.unpack(head)[0]
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def read_objects(f: BinaryIO, sizes: list[tuple[str, int]]) -> dict[str, bytes]:
    """The raw bytes that follow a "run" frame, by SHA-256 (see the module's protocol)."""
    objects = {}
    for sha, size in sizes:
        data = f.read(size)
        if len(data) < size:
            raise EOFError
        objects[sha] = data
    return objects


def encode_frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class _Channel:
    """The pipe to the parent; writes come from the job's thread and the progress sender."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, obj: Any) -> None:
        if os.getpid() != _PID:  # a job's forked copy (its progress, its output): not this pipe's
            return
        frame = encode_frame(obj)
        with self.lock:
            self.out.write(frame)
            self.out.flush()


class ChildJobContext:
    """``current_job()`` inside a child: the same fields and calls as the worker's JobContext,
    forwarded to the parent at most every ``min_interval`` seconds (log lines are never dropped)."""

    def __init__(self, channel: _Channel, job_id: str, queue: str, attempt: int, min_interval: float = 0.05) -> None:
        self.job_id, self.queue, self.attempt = job_id, queue, attempt
        self.progress_done: float | None = None
        self.progress_total: float | None = None
        self.message: str | None = None
        self.logs: list[str] = []
        self._channel = channel
        self._pending: list[str] = []
        self._dirty = False
        self._lock = threading.Lock()
        self._wake: threading.Event | None = None  # made with the sender: most jobs never report
        self._closed = False
        self._interval = min_interval
        self._sender: threading.Thread | None = None  # started by the first update: most jobs never report

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
                self._pending.append(line)
                self.logs.append(line)
                del self.logs[:-200]
            self._dirty = True
            if self._sender is None:
                self._wake = threading.Event()
                self._sender = threading.Thread(target=self._send_loop, name="naq-progress", daemon=True)
                self._sender.start()
        self._wake.set()  # type: ignore[union-attr]  # made with the sender above

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "progress": self.progress_done,
                "total": self.progress_total,
                "message": self.message,
                "logs": list(self.logs[-50:]),
            }

    def _flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            frame = ("progress", self.progress_done, self.progress_total, self.message, self._pending)
            self._pending = []
            self._dirty = False
        self._channel.send(frame)

    def _send_loop(self) -> None:
        wake = self._wake
        assert wake is not None  # made before this thread starts
        while not self._closed:
            wake.wait()
            wake.clear()
            if self._closed:
                return
            self._flush()
            time.sleep(self._interval)  # coalesce a tight loop of progress() calls

    def close(self) -> None:
        """Stop the sender and send what is left (before the job's outcome, on the same pipe)."""
        with self._lock:
            self._closed = True
            sender = self._sender
        if sender is not None:
            self._wake.set()  # type: ignore[union-attr]  # made with the sender
            sender.join()
        self._flush()


class _JobStream:
    """sys.stdout/stderr in a child: whole lines go to the running job's log, from its own thread or
    any thread started while it runs. Threads an earlier job left running are not this job's: what
    they print goes to the job process's stderr (the worker's log), as it does between jobs."""

    def __init__(self, label: str) -> None:
        self.ctx: ChildJobContext | None = None
        self._lines = LineSplitter(stream_prefix(label))
        self._lock = threading.Lock()
        self._left: frozenset[int] = frozenset()  # threads alive as the job started: not the job's

    def write(self, text: str) -> int:
        ctx = self.ctx
        if ctx is None or (self._left and threading.get_ident() in self._left):
            return sys.__stderr__.write(text) if sys.__stderr__ is not None else len(text)
        with self._lock:
            lines = self._lines.feed(text)
        for line in lines:
            ctx.update(line=line)
        return len(text)

    def begin_job(self, ctx: ChildJobContext, left: frozenset[int]) -> None:
        self._left, self.ctx = left, ctx

    def end_job(self) -> None:
        with self._lock:
            rest = self._lines.take_rest()
        if rest is not None and self.ctx is not None:
            self.ctx.update(line=rest)
        self.ctx = None

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer...: those of the real stderr
        return getattr(sys.__stderr__, name)


_threads_seen: tuple[int, frozenset[int]] = (0, frozenset())


def _threads_alive() -> frozenset[int]:
    """The threads other than the main one, alive as a job starts: what they print is not that
    job's. Looked up again only when their number changed (most jobs start no thread), so a thread
    that ended while another started, in one job, can go unseen until the number changes."""
    global _threads_seen
    n = threading.active_count()
    if n != _threads_seen[0]:
        main = threading.main_thread().ident
        _threads_seen = (n, frozenset(t.ident for t in threading.enumerate() if t.ident not in (None, main)))
    return _threads_seen[1]


def _watch_parent(ppid: int) -> None:
    # An orphaned child would go on running a job whose message is redelivered elsewhere.
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            os._exit(1)


def _describe(exc: BaseException, ser: Any) -> tuple:
    from .tracebacks import error_line, exception_type_names, user_traceback

    return (
        ser.dumps_exception(exc) if ser.name == "pickle" else b"",
        error_line(exc),
        user_traceback(exc),
        exception_type_names(exc),
    )


def is_async_callable(fn: Any) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004 (async __call__, not callable())


def _decode(ser: Any, body: bytes, objects: dict[str, bytes], job_id: str) -> tuple:
    if not objects:
        return ser.loads_call(body)
    from .blobs import decode_with_fetched  # (imported by the body's refs anyway)

    try:
        return decode_with_fetched(lambda: ser.loads_call(body), objects, f"job {job_id}")
    finally:
        objects.clear()  # the values are unpickled: their bytes need not stay for the job's run


def _run_one(channel: _Channel, ser: Any, state: JobProcessState, req: tuple, objects: dict[str, bytes]) -> tuple:
    _, job_id, queue, attempt, body, sys_path, _sizes, report_start = req
    if sys_path is not None:
        state.set_sys_path(sys_path)
    state.restore()  # the worker's cwd, sys.path, environment, umask, streams: not the last job's
    streams = state.streams
    try:
        fn, args, kwargs = _decode(ser, body, objects, job_id)
    except SerializationError as exc:
        return ("error", "decode", *_describe(exc, ser))
    if is_async_callable(fn):
        return ("async",)
    if report_start:
        channel.send(("started",))
    ctx = ChildJobContext(channel, job_id, queue, attempt)
    left = _threads_alive()
    for s in streams:
        s.begin_job(ctx, left)
    token = context.bind(ctx)  # type: ignore[arg-type]
    try:
        value = fn(*args, **kwargs)
        leave_if_forked(_PID, None)
        if inspect.isawaitable(value):  # a plain function that returned a coroutine: run it here
            value = _run_awaitable(value)
            leave_if_forked(_PID, None)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the job failed, the child goes on
        leave_if_forked(_PID, exc)
        return ("error", "job", *_describe(exc, ser))
    finally:
        context.unbind(token)
        for s in streams:
            s.end_job()
        ctx.close()
    try:
        return ("ok", ser.dumps_value(value))  # the stored payload itself: the worker doesn't decode it
    except SerializationError as exc:
        return ("error", "result", *_describe(exc, ser))


_PID = os.getpid()  # this job process's: a process with another pid is a job's forked copy


def leave_if_forked(pid: int, exc: BaseException | None) -> None:
    """Called where a job's call came back, in process ``pid``. A job that forked comes back there
    in both processes; the copy must never go on as the job process (its reply on the pipe would
    put every later answer one job off) or as the worker. It ends here, with its own exit code."""
    if os.getpid() == pid:
        return
    os._exit(exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else int(exc is not None))


def _run_awaitable(aw: Any) -> Any:
    import asyncio

    async def wait() -> Any:
        return await aw

    return asyncio.run(wait())


def _preload() -> None:
    # What every job needs, imported before "ready" (while the worker waits for its children
    # anyway) rather than during the first job.
    import cloudpickle  # noqa: F401
    from . import context, errors, tracebacks  # noqa: F401


def main(crash_log_path: str | None = None) -> None:
    """Serve jobs on stdin/stdout until the pipe closes; fatal-signal stacks go to ``crash_log_path``."""
    crash_log = open(crash_log_path, "w") if crash_log_path else sys.__stderr__
    if crash_log is not None:  # (a child started without stderr has nowhere to write it)
        faulthandler.enable(crash_log)  # a segfault's Python stack, for the job's failure record
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C / kernel interrupts are for the worker to handle
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    rin = os.fdopen(fd_in, "rb")
    channel = _Channel(os.fdopen(fd_out, "wb"))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="naq-parent-watch").start()
    streams = (_JobStream("stdout"), _JobStream("stderr"))
    sys.stdout, sys.stderr = streams
    try:
        init = read_frame(rin)
    except EOFError:
        return
    _, ser, sys_path, cwd = init
    _preload()
    sys.path[:] = sys_path
    try:
        os.chdir(cwd)
    except OSError:
        pass  # the worker's directory is gone; the job runs where the child started
    state = JobProcessState(streams)
    channel.send(("ready", os.getpid()))
    while True:
        try:
            req = read_frame(rin)
            objects = read_objects(rin, req[6])
        except EOFError:
            return  # the pool closed the pipe: a clean end
        channel.send(_run_one(channel, ser, state, req, objects))


if __name__ == "__main__":
    main()
