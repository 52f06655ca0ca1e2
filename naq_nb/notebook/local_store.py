"""Where ``nq.local()`` keeps its JetStream store, so a kernel restart finds its jobs again.

The default store is stable: one directory per user and working directory,
``$NAQ_LOCAL_DIR/<folder>-<hash of the cwd>`` (``NAQ_LOCAL_DIR`` defaults to
``$XDG_DATA_HOME/naq_nb/local``, i.e. ``~/.local/share/naq_nb/local``). The
restarted kernel runs in the same folder, finds the same store, and its
``nq.job(id)`` / ``Sweep.attach(id)`` / schedules / sweep cache come back.

One process at a time serves a store: :class:`StoreLock` holds an ``flock`` on
``naq-local.lock`` inside it for the cluster's life (the kernel dying releases
it at once). When another live kernel in the same folder holds the default
store, the new cluster runs on a temporary store and says so (a warning and
its repr), rather than failing; an explicitly given ``store_dir`` that is
busy is an error. ``store_dir=None`` asks for a temporary store (deleted at
stop).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import signal
import time
from pathlib import Path

from .errors import StoreBusyError

__all__ = ["AUTO", "default_store_dir", "StoreLock", "StoreBusyError", "store_is_new"]

AUTO = "auto"
_LOCK_NAME = "naq-local.lock"


def default_store_dir(cwd: str | os.PathLike | None = None) -> Path:
    """The stable store of this user for the working directory ``cwd`` (default: the current one)."""
    folder = Path(cwd if cwd is not None else os.getcwd()).resolve()
    base = os.environ.get("NAQ_LOCAL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"), "naq_nb", "local"
    )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name or "root")[:40]
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    return Path(base) / f"{name}-{digest}"


def store_is_new(store: Path) -> bool:
    """True when nats-server has never written JetStream data there."""
    js = store / "jetstream"
    return not (js.is_dir() and any(js.iterdir()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """An exclusive ``flock`` on ``<store>/naq-local.lock``; the file also names the server's pid."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store / _LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreBusyError` naming the holder's pid."""
        self.store.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = self._read().get("pid", "?")
            raise StoreBusyError(f"the store {self.store} is in use by process {holder}") from None
        self._fd = fd
        self._wait_old_server()

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def _wait_old_server(self, timeout: float = 10.0) -> None:
        # The previous kernel's nats-server gets SIGTERM when that kernel dies (parent-death
        # signal) and may still be flushing the store: let it finish before a new one opens it.
        try:
            pid = int(self._read().get("server_pid", "0"))
        except ValueError:
            return
        if pid <= 0 or pid == os.getpid():
            return
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid) and _is_our_server(pid, self.store):
            os.kill(pid, signal.SIGKILL)

    def record(self, server_pid: int | None) -> None:
        """Write who serves the store (read by the next kernel)."""
        if self._fd is None:
            return
        text = f"pid={os.getpid()}\nserver_pid={server_pid or 0}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock


def _is_our_server(pid: int, store: Path) -> bool:
    """A leftover nats-server whose command line names this store's config (never a stranger's process)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.startswith(str(store).encode()) for a in argv) and any(b"nats-server" in a for a in argv[:1])
