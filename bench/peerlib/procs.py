"""Processes the bench starts: a Redis server, process groups, and stopping them by PID.

Everything is started in its own process group (``start_new_session``) so that a
Ctrl-C in the terminal reaches only the bench, which then stops each group it owns
by its id: the group also holds the children a worker CLI forks (celery's pool, rq's
work horses), which a plain ``terminate()`` of the parent could leave behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["free_port", "start_group", "stop_group", "live_members", "RedisServer"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc Linux: the bench's own cleanup still stops it
        pass


def start_group(argv: list[str], **kw) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new process group (its pgid is its pid). It gets SIGTERM
    if the bench itself is killed outright, when no cleanup of ours can run."""
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kw)


def live_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (from /proc; empty where there is none)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still means the group exists
        return True


def stop_group(proc: subprocess.Popen, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop the group led by ``proc`` like systemd's mixed mode: ``sig`` to the leader only (a
    worker CLI shuts its own pool down; some pools take a signal of their own as a cue to restart),
    up to ``grace`` seconds for it to exit, then SIGKILL to whatever is left in the group."""
    pgid = proc.pid
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 1.0  # children the leader stopped may need a moment to go
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # SIGKILLed above; only a process stuck in the kernel lands here
        pass
    # Until every member has exited (zombies have closed their sockets), a dying consumer can still
    # be handed a message by its broker.
    deadline = time.monotonic() + 10
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _resp(host: str, port: int, *words: str, timeout: float = 2.0) -> bytes:
    """Send one Redis command (RESP array) on a fresh connection and return the raw reply."""
    req = f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        return s.recv(65536)


class RedisServer:
    """Debian's ``redis-server`` on a free loopback port, in a temporary directory, no persistence."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(self.binary, os.X_OK):
            raise SystemExit("redis-server not found: apt-get install -y redis-server (or `make bench-peers`, "
                             "which installs it)")
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> "RedisServer":
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        argv = [self.binary, "--port", str(self.port), "--bind", self.host, "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--loglevel", "warning", "--logfile", str(Path(self.dir) / "redis.log")]
        self.proc = start_group(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            try:
                if _resp(self.host, self.port, "PING").startswith(b"+PONG"):
                    return self
            except OSError:  # not listening yet
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def flushall(self) -> None:
        _resp(self.host, self.port, "FLUSHALL", timeout=30)

    def version(self) -> str:
        info = _resp(self.host, self.port, "INFO", "server").decode(errors="replace")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=10)
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
