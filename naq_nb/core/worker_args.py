"""A worker's arguments, checked before anything starts: queues, sizes, grace period and name."""

from __future__ import annotations

import re
import socket
from typing import Any, Iterable

from .layout import validate_queue_name

__all__ = ["MAX_CONCURRENCY", "MAX_PREFETCH", "check_flag", "check_sizes", "queue_names", "worker_name"]

_INF = float("inf")
#: The most slots a worker takes, per execution: each slot of "processes" is a job process of its own.
MAX_CONCURRENCY = {"processes": 1_000, "threads": 10_000}
MAX_PREFETCH = 10_000  # jobs held beyond the slots (the consumer's max_ack_pending is 20,000)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def queue_names(queues: str | Iterable[str] | None, default: str) -> list[str]:
    names = [default] if queues is None else [queues] if isinstance(queues, str) else list(queues)
    if not names:
        raise ValueError("a worker needs at least one queue")
    return [validate_queue_name(q) for q in names]


def check_sizes(concurrency: Any, prefetch: Any, grace_period: Any, execution: str) -> None:
    most = MAX_CONCURRENCY[execution]
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= most:
        raise ValueError(
            f"concurrency must be an int from 1 to {most:,} (execution={execution!r}), not {concurrency!r}"
        )
    if prefetch is not None and (
        isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 1 <= prefetch <= MAX_PREFETCH
    ):
        raise ValueError(f"prefetch must be an int from 1 to {MAX_PREFETCH:,} or None, not {prefetch!r}")
    if isinstance(grace_period, bool) or not isinstance(grace_period, (int, float)) or not 0 <= grace_period < _INF:
        raise ValueError(f"grace_period must be a finite number of seconds >= 0, not {grace_period!r}")


def worker_name(name: Any) -> str:
    """``name`` checked (it is part of the worker's key in the workers bucket), or the host's name."""
    if name is None:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "worker"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"a worker name must be 1-64 letters, digits, '_', '-' or '.', not {name!r}")
    return name


def check_flag(what: str, value: Any) -> bool:
    """``value`` if it is True or False (a truthy string such as "no" must not pass for True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {value!r}")
    return value
