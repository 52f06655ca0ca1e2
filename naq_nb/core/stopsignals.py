"""The signals that stop a long-running command (``naq worker``, ``naq scheduler``, ``naq server``)."""

from __future__ import annotations

import signal

__all__ = ["stop_signals"]


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
