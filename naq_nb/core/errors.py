"""Exceptions raised by naq_nb. Names follow naq's where naq has one."""

from __future__ import annotations

from typing import Sequence

__all__ = [
    "NaqException",
    "NaqConnectionError",
    "ConfigurationError",
    "SerializationError",
    "PayloadTooLargeError",
    "JobNotFoundError",
    "JobExecutionError",
    "JobCancelledError",
    "JobTimeoutError",
    "DependencyFailedError",
    "LayoutConflictError",
    "OptionTypeError",
    "ServerBinaryNotFound",
    "UnknownQueueError",
    "SignatureError",
    "JobNotFinishedError",
    "DuplicateJobError",
    "PublishTimeoutError",
    "NoAnswerError",
    "ConcurrentUpdateError",
    "ServerStartError",
    "ScheduleNotFoundError",
    "BlobError",
    "WorkerProcessDied",
    "JobLostError",
    "JobNotStoredError",
]


class NaqException(Exception):
    """Base class of every naq_nb error."""


class NaqConnectionError(NaqException):
    """The NATS server could not be reached or the connection was lost."""


class PublishTimeoutError(NaqConnectionError, TimeoutError):
    """JetStream did not acknowledge a publish within its bound."""


class NoAnswerError(NaqConnectionError, TimeoutError):
    """A read got no answer: the connection is down (and being retried) or the server is silent.
    Also a ``TimeoutError``, which is what such a read raised before (nats-py's bare one)."""


class JobNotStoredError(NaqConnectionError):
    """An enqueue that returned before its acknowledgement was not stored after all (raised by its
    handle's reads, and by the client's next enqueue, ``flush()`` or ``close()``); or jobs of an
    ``enqueue_many`` that were not stored (their ids: ``not_stored``)."""

    def __init__(self, message: str = "", not_stored: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.not_stored = list(not_stored)


class ConfigurationError(NaqException, ValueError):
    """A setting or option has an invalid value."""


class OptionTypeError(ConfigurationError, TypeError):
    """An option of the wrong type: a TypeError as naq raises there, and a ConfigurationError."""


class LayoutConflictError(ConfigurationError):
    """An existing stream or bucket has a configuration naq_nb cannot use."""


class UnknownQueueError(ConfigurationError):
    """A queue name is not valid as a NATS subject token."""


class ServerBinaryNotFound(NaqException, FileNotFoundError):
    """No ``nats-server`` binary was found for the embedded server."""


class ServerStartError(NaqException, RuntimeError):
    """The nats-server process did not come up."""


class SerializationError(NaqException, TypeError):
    """A function, its arguments or its result cannot be (de)serialized."""


class SignatureError(SerializationError):
    """A pickled payload is unsigned or its signature does not verify."""


class PayloadTooLargeError(SerializationError):
    """A payload is larger than the server's max_payload."""


class BlobError(SerializationError):
    """A payload kept in the object store is missing, corrupted or cannot be stored."""


class JobNotFoundError(NaqException, KeyError):
    """No job (or result, or schedule) exists under that id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "job not found"


class ScheduleNotFoundError(JobNotFoundError):
    """No schedule with that id (never created, finished, or cancelled)."""


class JobExecutionError(NaqException):
    """A job failed; raised when the original exception cannot be rebuilt.

    ``remote_traceback`` holds the worker-side traceback text and ``exc_type``
    the original exception's qualified type name.
    """

    def __init__(self, message: str, *, exc_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class JobCancelledError(NaqException):
    """The job was cancelled before it finished."""


class JobTimeoutError(NaqException, TimeoutError):
    """The job ran longer than its timeout."""


class DependencyFailedError(JobExecutionError):
    """A job this one depends on failed or was cancelled, so this one never ran (it counts as failed,
    so naq's ``except JobExecutionError`` catches it too)."""


class JobNotFinishedError(JobNotFoundError, TimeoutError):
    """The job exists but has no result yet (naq raised JobNotFoundError here; both catch it)."""


class DuplicateJobError(ConfigurationError):
    """A chosen ``job_id`` (or ``key``) is already used by a different call."""


class ConcurrentUpdateError(NaqException):
    """A record kept changing under a revision-checked update until the call gave up (try again)."""


class WorkerProcessDied(NaqException):
    """The child process running a job died (a signal, ``os._exit``, out of memory)."""


class JobLostError(NaqException):
    """The job's runs kept ending without an outcome (its worker died each time)."""


#: JetStream's error codes for a message that is no longer there: "no message found" (404/10037),
#: "sequence not found" (400/10043), and 500/10057 for a sequence already deleted. A delete or get
#: that races with another worker's delete gets one of them.
JS_MESSAGE_GONE = (10037, 10043, 10057)
#: JetStream's "wrong last sequence" (400/10071): an expected-last-sequence write found the key moved on.
JS_WRONG_LAST_SEQUENCE = 10071
#: JetStream's codes for a write it will not make room for: the stream's limits (maximum bytes or
#: messages: 10077), the account's or server's storage (10047, 10028), resources (10023). Some come
#: as a 503, as an outage does; waiting for them ran a job again and again (23 runs, JobLostError).
JS_STORE_REFUSED = frozenset({10077, 10047, 10028, 10023})
