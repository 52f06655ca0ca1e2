"""A job's status values: the one home of the status names and of which ones end a job.

Every layer reads statuses through these (``JobStatus.SUCCEEDED``, ``TERMINAL``,
``FAILED_STATES``), never through its own copies of the strings.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["JobStatus", "TERMINAL", "TERMINAL_VALUES", "FAILED_STATES"]


class JobStatus(str, Enum):
    QUEUED = "queued"
    WAITING = "waiting"        # on dependencies
    SCHEDULED = "scheduled"    # due later
    RUNNING = "running"
    RETRYING = "retrying"      # failed, a retry is due
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


#: The same sets as plain strings, for status records read as JSON.
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
#: Terminal states that are not a success (a dependent of such a job fails).
FAILED_STATES = frozenset({JobStatus.FAILED.value, JobStatus.CANCELLED.value})
