"""Child processes that never outlive their Python parent for long, and reading their logs.

A :class:`KeptProcess` is forked from a keeper thread that lives exactly as long
as the child: on Linux the parent-death signal is tied to the thread that
forked, so the child gets SIGTERM when that thread (or the whole parent, even
on SIGKILL) goes. The child gets its own process group, so a Ctrl-C in a
terminal or a kernel interrupt reaches the parent only, which stops it itself.
Used by the embedded ``nats-server`` and by ``nq.local()``'s worker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

__all__ = ["KeptProcess", "log_tail"]

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux (no libc.so.6 / prctl): the atexit hooks are left to stop the child
    os.setpgrp()


class KeptProcess:
    """``argv`` as a child process writing stdout and stderr to ``log_path``; see the module docstring."""

    def __init__(self, argv: list[str], log_path: Path, *, name: str, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path, self.env = argv, Path(log_path), env
        self.proc: subprocess.Popen | None = None
        self._error: OSError | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._keep, name=name, daemon=True)

    def start(self) -> "KeptProcess":
        """Fork and exec; raises the ``OSError`` of a binary that cannot be started."""
        self.thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _keep(self) -> None:
        try:
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_child_setup,
                    close_fds=True,
                )
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.proc.wait()

    @property
    def pid(self) -> int:
        """The child's process id (it has one once :meth:`start` returned)."""
        if self.proc is None:
            raise RuntimeError(f"{self.thread.name}: not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit code; None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float, kill_wait: float | None = None) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; the keeper thread is joined."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(kill_wait)
        self.thread.join(timeout)

    def log_tail(self, n: int) -> list[str]:
        return log_tail(self.log_path, n)


def log_tail(path: Path | None, n: int) -> list[str]:
    """The last ``n`` non-blank-ended lines of a log file; [] when there is none (yet) or it cannot be read."""
    if path is None:
        return []
    try:
        return path.read_text(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return []
