"""A supervised pool of child processes for sync job code.

Each slot of a worker gets one pre-started child (:mod:`naq_nb.core.procmain`;
see :mod:`naq_nb.core.procchild` for the protocol), reused job after job, so
starting a job costs a pipe round trip, not a process start. All children
start at once, before the worker pulls its first job. Children are
started with ``subprocess`` (fork + exec at once), never a bare ``fork`` of the
threaded worker or notebook kernel, and never by re-importing ``__main__`` (as
multiprocessing's ``spawn`` would: a script without a ``__main__`` guard, or a
notebook, would run again in every child).

The child decodes the job body itself (the worker only checks its serializer
and signature), so the call is never pickled twice and a payload that crashes
while unpickling takes down a child, not the worker. The same goes for
``nq.put`` values: the worker sends their pickled bytes after the body, raw
and a segment at a time (:meth:`_Child.send_raw`), and the child unpickles them.

When a job times out or is cancelled, its child is killed (SIGKILL, with its
whole process group: what the job forked goes too) and a new one is started in
the background; the slot is free at once. A child that dies
on its own (a signal, ``os._exit``, the OOM killer) fails its job with
:class:`WorkerProcessDied` naming the signal or exit code, plus the Python
stack faulthandler wrote for a fatal signal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, cast

from .errors import WorkerProcessDied
from .procchild import encode_frame

__all__ = ["ProcessPool", "WorkerProcessDied", "death_reason"]

log = logging.getLogger("naq_nb.worker")

_LEN = 4
_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "procmain.py")
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
_RESPAWN_BACKOFF = (0.5, 1.0, 2.0, 5.0)
_EXIT_LINGER = 0.5
_GROUP_KILL_WINDOW = 5.0
# nq.put bytes go to a child this much at a time, each once the pipe's buffer has drained: written
# at once, every child's whole copy sat in the worker's memory until the child had read it.
_SEGMENT = 1024 * 1024


def death_reason(returncode: int | None) -> str:
    """``worker process died: signal 11 (SIGSEGV)`` or ``... exited with code 1``."""
    if returncode is None:
        return "worker process died"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"worker process died: signal {-returncode} ({name})"
    return f"worker process died: exited with code {returncode}"


class _Frames(asyncio.SubprocessProtocol):
    """A child's end of the protocol on the parent's loop: its stdout cut into frames as bytes
    arrive (no stream reader, one wake-up of the reading task per frame), and its exit."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frames: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self.eof = False
        self.exited = asyncio.get_running_loop().create_future()
        self._exited_at: float | None = None
        self._paused: asyncio.Future[None] | None = None  # the stdin pipe's buffer is full (see drained)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _LEN:
            end = _LEN + int.from_bytes(buf[:_LEN], "big")
            if len(buf) < end:
                break
            self._frames.append(bytes(buf[_LEN:end]))
            del buf[:end]
        if self._frames:
            self._wake()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.eof = True
            self._wake()
        self.resume_writing()  # a writer waiting on a pipe that closed finds it closed

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    async def drained(self) -> None:
        """Return once the stdin pipe's buffer is below its low-water mark (or the pipe closed)."""
        if self._paused is not None:
            await asyncio.shield(self._paused)  # a cancelled waiter must not leave it cancelled for the next

    def exited_for(self) -> float:
        """Seconds since the child exited (0 while it runs)."""
        return 0.0 if self._exited_at is None else time.monotonic() - self._exited_at

    def process_exited(self) -> None:
        self._exited_at = time.monotonic()
        if not self.exited.done():
            self.exited.set_result(None)
        # A process the job forked may hold the pipe open: the frames end shortly after the child
        # (what it wrote before exiting is in the pipe already, read in the next loop iterations).
        asyncio.get_running_loop().call_later(_EXIT_LINGER, self._end)

    def _end(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_frame(self) -> bytes:
        """The next whole frame's payload; ``ConnectionResetError`` once the child is gone."""
        while not self._frames:
            if self.eof:
                raise ConnectionResetError("the job process closed its pipe")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()


class _Child:
    def __init__(self, transport: asyncio.SubprocessTransport, frames: _Frames, crash_log: str) -> None:
        self.transport = transport
        self.frames = frames
        self.crash_log = crash_log
        self.sys_path: list[str] | None = None

    @property
    def pid(self) -> int:
        return self.transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    def send(self, obj: Any) -> None:
        """Queue a frame for the child (written at once while the pipe has room; one frame at a time
        is in flight, so what is buffered stays bounded by one job body)."""
        self._stdin().write(encode_frame(obj))

    async def send_raw(self, data: bytes | bytearray) -> None:
        """Write ``data`` as is (the child knows its size from the frame before it), a segment at a
        time: the worker holds no copy of it, only a segment's worth of pipe buffer per child."""
        view = memoryview(data)
        for start in range(0, len(view), _SEGMENT):
            self._stdin().write(view[start : start + _SEGMENT])
            await self.frames.drained()

    def _stdin(self) -> asyncio.WriteTransport:
        # A write transport by what it does: uvloop's pipe transports are not asyncio.WriteTransport.
        stdin = cast("asyncio.WriteTransport | None", self.transport.get_pipe_transport(0))
        if stdin is None or stdin.is_closing():
            raise BrokenPipeError("the job process's pipe is closed")
        return stdin

    async def recv(self) -> Any:
        return pickle.loads(await self.frames.next_frame())

    async def wait(self) -> int | None:
        await asyncio.shield(self.frames.exited)
        return self.returncode

    def close_stdin(self) -> None:
        stdin = self.transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()

    def kill(self) -> None:
        """Kill the child and every process it started (its own process group: a hung or orphaned
        helper of a job must not outlive it, nor hold its pipe open)."""
        if self.returncode is None:  # first: killed by the group signal, the child could be reaped
            with contextlib.suppress(ProcessLookupError):  # by this call's poll, not asyncio's watcher
                self.transport.kill()
        if self.frames.exited_for() < _GROUP_KILL_WINDOW:
            # The group outlives its reaped leader while members remain (so its id is not reused);
            # once it is empty, its id could become another new session's (every job process leads one).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.close_stdin()

    def crash_text(self, limit: int = 40) -> str:
        try:
            with open(self.crash_log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-limit:])

    def release(self) -> None:
        """Once the child has ended: let go of its pipes (a process it forked may still hold one
        open) and remove its crash log."""
        self.transport.close()
        with contextlib.suppress(OSError):
            os.unlink(self.crash_log)


class ProcessPool:
    """``size`` children on the current event loop; :meth:`call` runs one job body in one of them."""

    def __init__(self, size: int, serializer: Any, env: dict[str, str] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, not {size!r}")
        self.size = size
        self.serializer = serializer
        self.env = env or {}  # over the worker's environment: NAQ_NATS_URL... of the worker's own connection
        self._idle: asyncio.Queue[_Child] | None = None
        self._children: set[_Child] = set()
        self._starting: set[asyncio.Task] = set()
        self._closed = False
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children (for tests and ``naq workers``)."""
        return sorted(c.pid for c in self._children if c.returncode is None)

    def start(self) -> None:
        """Start every child at once, in the background (:meth:`wait_ready` waits for them): a
        worker that pulled jobs while its children still started one by one would run them on a
        few busy slots, its children's start-up competing with the jobs for the cores."""
        # Last in, first out: the child that finished last runs the next job. Its memory is still
        # in the CPU's caches, so it wakes and answers faster (job process round trip 0.23-0.29 ms
        # against 0.32-0.36 ms when the ten children take turns, one job at a time); which idle
        # child runs a job is otherwise all the same.
        self._idle = asyncio.LifoQueue()
        for _ in range(self.size):
            self._start_one()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every child has started, at most ``timeout`` seconds; True if they all did.
        A child that cannot start keeps being retried in the background either way."""
        starting = list(self._starting)
        if starting:
            await asyncio.wait(starting, timeout=timeout)
        return len(self._children) >= self.size

    def _start_one(self, delay: float = 0.0) -> None:
        self._track(asyncio.ensure_future(self._spawn(delay)))

    def _track(self, task: asyncio.Task) -> None:
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _spawn(self, delay: float) -> None:
        attempt = 0
        await asyncio.sleep(delay)
        while not self._closed:
            try:
                child = await self._launch()
            except Exception as exc:  # whatever it is (a serializer that cannot be pickled...), the slot needs a child
                wait = _RESPAWN_BACKOFF[min(attempt, len(_RESPAWN_BACKOFF) - 1)]
                log.error("cannot start a job process (%s); trying again in %gs", exc, wait, exc_info=True)
                attempt += 1
                await asyncio.sleep(wait)
                continue
            if self._closed:
                await self._retire(child)
                return
            self._children.add(child)
            assert self._idle is not None
            self._idle.put_nowait(child)
            return

    async def _launch(self) -> _Child:
        fd, crash_log = tempfile.mkstemp(prefix="naq-job-", suffix=".crash")
        os.close(fd)
        transport, frames = await asyncio.get_running_loop().subprocess_exec(
            _Frames,
            sys.executable,
            "-c",
            _BOOT,
            _MAIN,
            crash_log,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            start_new_session=True,  # terminal and kernel-interrupt signals are for the worker, not its jobs
            env={**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        child = _Child(transport, frames, crash_log)
        try:
            child.send(("init", self.serializer, list(sys.path), os.getcwd()))
            child.sys_path = list(sys.path)
            hello = await asyncio.wait_for(child.recv(), 60)
            if hello[0] != "ready":
                raise ValueError(f"unexpected first frame from a job process: {hello[0]!r}")
        except BaseException:
            child.kill()
            with contextlib.suppress(Exception):
                await child.wait()
            child.release()
            raise
        return child

    async def acquire(self) -> _Child:
        """An idle child (waits while children are being started); give it to :meth:`call`."""
        if self._closed or self._idle is None:
            raise RuntimeError("the process pool is closed")
        while True:
            child = await self._idle.get()
            if child.returncode is None:
                return child
            # Killed while idle (the OOM killer, an operator): no job was lost, take another.
            log.warning(
                "job process %d died while idle (%s); starting another", child.pid, death_reason(child.returncode)
            )
            self._replace(child)

    async def call(
        self,
        child: _Child,
        job_id: str,
        queue: str,
        attempt: int,
        body: bytes,
        on_progress: Any,
        objects: dict[str, bytes | bytearray] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> tuple:
        """Run a job body in ``child`` (from :meth:`acquire`); returns its final reply.

        ``objects``: the pickled bytes of the body's ``nq.put`` values by SHA-256, for
        the child to unpickle. ``on_progress(done, total, message, lines)`` is called for
        each progress frame; ``on_started()``, if given, once the child has decoded the body
        and calls the (sync) function. Cancelling this call (a timeout, a cancel, a forced stop) kills
        the child. A child that dies raises :class:`WorkerProcessDied`. Either way the
        child goes back to the pool or is replaced.
        """
        healthy = False
        try:
            path = list(sys.path)
            sizes = [(sha, len(data)) for sha, data in (objects or {}).items()]
            try:
                sys_path = None if path == child.sys_path else path
                child.send(("run", job_id, queue, attempt, body, sys_path, sizes, on_started is not None))
                for data in (objects or {}).values():
                    await child.send_raw(data)
            except (BrokenPipeError, ConnectionResetError):
                raise await self._died(child) from None
            child.sys_path = path
            while True:
                try:
                    frame = await child.recv()
                except ConnectionError:
                    raise await self._died(child) from None
                if frame[0] == "progress":
                    on_progress(*frame[1:])
                elif frame[0] == "started":
                    if on_started is not None:
                        on_started()
                else:
                    healthy = True
                    return frame
        finally:
            if healthy and not self._closed and self._idle is not None:  # (made by start(), before acquire)
                self._idle.put_nowait(child)
            else:
                self._replace(child)

    async def _died(self, child: _Child) -> WorkerProcessDied:
        try:
            rc = await asyncio.wait_for(child.wait(), 10)
        except asyncio.TimeoutError:  # the pipe closed but the process lingers: make sure it is gone
            child.kill()
            rc = await child.wait()
        err = WorkerProcessDied(death_reason(rc))
        err.crash_text = child.crash_text()  # type: ignore[attr-defined]
        return err

    def _replace(self, child: _Child) -> None:
        """Kill ``child`` (it timed out, was cancelled or died) and start another in its place."""
        child.kill()
        self._children.discard(child)
        self.restarts += 1
        asyncio.ensure_future(self._reap(child))
        if not self._closed:
            self._start_one()

    async def _reap(self, child: _Child) -> None:
        with contextlib.suppress(Exception):
            await child.wait()
        child.release()

    async def _retire(self, child: _Child) -> None:
        """Let an idle child end by closing its pipe (kill it if it does not), then kill what is left
        of its process group: helpers its jobs started and left running must not outlive it."""
        child.close_stdin()
        try:
            await asyncio.wait_for(child.wait(), 2.0)
        except asyncio.TimeoutError:
            pass
        child.kill()  # the group (its id is still the child's: reaped just now, within the kill window)
        await child.wait()
        child.release()

    async def close(self) -> None:
        """Stop every child: idle ones end on their own, busy ones are killed."""
        self._closed = True
        for t in list(self._starting):
            t.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        idle = []
        while self._idle is not None and not self._idle.empty():
            idle.append(self._idle.get_nowait())
        for c in self._children - set(idle):
            c.kill()
        await asyncio.gather(*(self._retire(c) for c in self._children), return_exceptions=True)
        self._children.clear()
