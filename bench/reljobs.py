"""Job functions for bench/reliability.py (worker processes import them from bench/)."""

import os
import signal
import sys
import time


def mark(path: str, token: str, sleep: float = 0.0) -> str:
    """Append ``token`` to ``path`` (one line per execution: O_APPEND lines are atomic), then sleep."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    time.sleep(sleep)
    return token


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hard_exit() -> None:
    os._exit(1)


def sys_exit() -> None:
    sys.exit(2)


def interrupt() -> None:
    raise KeyboardInterrupt


def hang() -> None:
    time.sleep(3600)
