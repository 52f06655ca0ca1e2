"""The signals that stop a long-running command (``naq worker``, ``naq scheduler``, ``naq server``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable

__all__ = ["stop_signals", "stop_twice_on_signals"]


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGINT, SIGTERM and SIGHUP, the last unless this process ignores it.

    SIGHUP is what a closed terminal or a dropped ssh session sends: left to its default it killed
    the process on the spot (a worker's running jobs waited out the ack wait for another worker, a
    scheduler kept its lease, ``naq server`` left its temporary store behind), so it stops the
    service gracefully like SIGTERM. A process started under ``nohup`` ignores SIGHUP, and asked
    for that: a handler installed here would undo it, so then it stays ignored.
    """
    sigs = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        sigs.append(signal.SIGHUP)
    return tuple(sigs)


def stop_twice_on_signals(request_stop: Callable[[bool], None], log: logging.Logger) -> None:
    """On the running loop: the first stop signal calls ``request_stop(True)`` (graceful), any
    later one ``request_stop(False)`` (at once). For a service's command, never a library's."""
    loop = asyncio.get_running_loop()
    received = [0]

    def handler() -> None:
        received[0] += 1
        graceful = received[0] == 1
        log.warning("signal received: %s", "stopping gracefully" if graceful else "stopping now")
        request_stop(graceful)

    for sig in stop_signals():
        loop.add_signal_handler(sig, handler)
