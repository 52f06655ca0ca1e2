"""Result records as stored in the results bucket, and exception rebuilding.

Status records (one small JSON object per job, a put per change) have their
own module, :mod:`naq_nb.core.status`, re-exported here. A result record is written once per job
when it ends: a JSON header line (status, error, traceback) and the serialized
value or exception.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence, TypedDict, cast

from .errors import (
    DependencyFailedError,
    JobCancelledError,
    JobExecutionError,
    NaqException,
    SerializationError,
    SignatureError,
)
from .job import JobStatus
from .serialization import Serializer, get_serializer, open_record, pack_record, unpack_record
from .status import decode_status, encode_status, status_record  # re-exported; their home is core.status
from .tracebacks import error_line, exception_type_names, user_traceback

log = logging.getLogger("naq_nb")

__all__ = [
    "user_traceback",
    "status_record",
    "encode_status",
    "decode_status",
    "ResultMeta",
    "ResultRecord",
    "encode_result",
    "encode_failure",
    "rebuild_exception",
    "exception_type_names",
]


class ResultMeta(TypedDict, total=False):
    """The JSON head of a job's result record; the payload beside it is the value or the pickled exception."""

    status: str  # succeeded | failed | cancelled
    ser: str  # how the payload is encoded (pickle | json); absent: no payload
    finished_at: float
    expires_at: float  # with a result TTL
    started_at: float
    worker: str
    attempts: int
    failures: int
    error: str | None
    traceback: str
    exc_type: str  # the exception's class name
    exc_types: list[str]  # ... and its bases, for except-matching on the client
    dependency: str | None  # failed because this dependency failed
    refused: bool  # set by decode: a bad seal, or pickle where only JSON is accepted
    id: str  # the job id, on the head of a record stored whole in the object store
    blob: dict[str, Any]  # ... and where it is stored (a BlobRef)
    job_status: str  # the status of a stored record that could not be read back


class ResultRecord:
    """A decoded result: ``status``, ``meta`` and the value or the rebuilt exception.

    A record refused by :meth:`decode` (bad signature, or pickled data where
    pickle is not accepted) keeps no payload: it is a failure whose exception
    is the refusal, so nothing in it is ever unpickled.
    """

    def __init__(self, meta: ResultMeta, payload: bytes, refused: NaqException | None = None) -> None:
        self.meta = meta
        self.payload = payload
        self.refused = refused

    @property
    def status(self) -> str:
        return self.meta.get("status", "")

    @property
    def ok(self) -> bool:
        return self.status == JobStatus.SUCCEEDED.value

    @property
    def expired(self) -> bool:
        exp = self.meta.get("expires_at")
        # A time of another type (a damaged or forged record) is no expiry, never a TypeError.
        return isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp < time.time()

    def value(self) -> Any:
        if self.refused is not None:
            raise self.refused
        ser = get_serializer(self.meta.get("ser", "pickle"))
        return ser.loads_value(self.payload) if self.payload else None

    def exception(self) -> BaseException:
        if self.refused is not None:
            return self.refused
        return rebuild_exception(self.meta, self.payload)

    def unwrap(self) -> Any:
        """The value, or raise the job's exception."""
        if self.ok:
            return self.value()
        raise self.exception()

    @classmethod
    def decode(
        cls, data: bytes, job_id: str | None = None, keys: Sequence[bytes] = (), accept_pickle: bool = True
    ) -> "ResultRecord":
        """Decode a stored result; with ``keys``, its seal for ``job_id`` is checked before anything else.

        With ``accept_pickle=False`` (a JSON-mode client) pickled values and exceptions are refused too.
        """
        if keys and job_id is not None:
            try:
                meta, payload = open_record(data, job_id, keys)
            except SignatureError as exc:
                log.warning("refusing the result record of job %s: %s", job_id, exc)
                return cls.refusal(exc)
        else:
            meta, payload = unpack_record(data)
        if not accept_pickle and payload and meta.get("ser", "pickle") == "pickle":
            if meta.get("status") == JobStatus.SUCCEEDED.value:
                return cls.refusal(
                    SerializationError(
                        f"the result of job {job_id} is pickled but this client only accepts JSON (NAQ_JOB_SERIALIZER)"
                    )
                )
            payload = b""  # a failure still reports its error text and traceback, without the pickled exception
        return cls(cast(ResultMeta, meta), payload)  # JSON read back as written by encode_result / encode_failure

    @classmethod
    def refusal(cls, exc: NaqException) -> "ResultRecord":
        """A failure whose exception is ``exc``: what a record that must not be used (refused,
        unreadable) or no longer exists stands for."""
        return cls({"status": JobStatus.FAILED.value, "error": str(exc), "refused": True}, b"", refused=exc)


def encode_result(
    ser: Serializer, value: Any, *, result_ttl: float | None, payload: bytes | None = None, **meta: Any
) -> bytes:
    """A success record; ``payload`` is ``value`` already serialized with ``ser`` (by a job process)."""
    if payload is None:
        payload = ser.dumps_value(value)
    m = {"status": JobStatus.SUCCEEDED.value, "ser": ser.name, "finished_at": time.time(), **meta}
    if result_ttl:
        m["expires_at"] = time.time() + result_ttl
    return pack_record(m, payload)


def encode_failure(
    ser: Serializer | None,
    exc: BaseException | None,
    *,
    status: JobStatus = JobStatus.FAILED,
    error: str | None = None,
    tb: str | None = None,
    result_ttl: float | None = None,
    **meta: Any,
) -> bytes:
    payload = b""
    m: dict[str, Any] = {"status": status.value, "finished_at": time.time(), **meta}
    if exc is not None:
        m["exc_type"] = exception_type_names(exc)[0]
        m["exc_types"] = exception_type_names(exc)
        m["error"] = error or error_line(exc)
        m["traceback"] = tb if tb is not None else user_traceback(exc)
        if ser is not None and ser.name == "pickle":
            payload = ser.dumps_exception(exc)
            m["ser"] = "pickle"
    else:
        m["error"] = error or status.value
        m["traceback"] = tb or ""
    if result_ttl:
        m["expires_at"] = time.time() + result_ttl
    return pack_record(m, payload)


def rebuild_exception(meta: Mapping[str, Any], payload: bytes) -> BaseException:
    """The job's exception as its original type where possible.

    The rebuilt exception is also a :class:`JobExecutionError`, so both
    ``except ValueError`` and naq-style ``except JobExecutionError`` catch it;
    ``remote_traceback`` holds the worker's traceback text.
    """
    status = meta.get("status")
    tb = meta.get("traceback", "")
    err = meta.get("error") or status or "job failed"
    if status == JobStatus.CANCELLED.value:
        return JobCancelledError(err)
    if meta.get("dependency"):
        # The record's error reads "DependencyFailedError: job ..."; the exception's message is the part after.
        return DependencyFailedError(err.removeprefix(f"{DependencyFailedError.__name__}: "))
    original = None
    if payload and meta.get("ser") == "pickle":
        original = get_serializer("pickle").loads_exception(payload)
    if original is None:
        exc: BaseException = JobExecutionError(err, exc_type=meta.get("exc_type", ""), remote_traceback=tb)
    else:
        exc = _as_job_error(original, meta.get("exc_type", ""), tb)
    exc.remote_traceback = tb  # type: ignore[attr-defined]
    if tb and hasattr(exc, "add_note"):
        exc.add_note("Remote traceback (worker side):\n" + tb.rstrip())
    return exc


def _as_job_error(original: BaseException, exc_type: str, tb: str) -> BaseException:
    cls = type(original)
    if isinstance(original, JobExecutionError):
        return original
    try:
        mixed = type(
            cls.__name__, (cls, JobExecutionError), {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        )
        try:
            exc = _remade(original, mixed)
        except Exception:  # its constructor will not take its own arguments back: args and attributes only
            exc = mixed.__new__(mixed, *original.args)
            exc.args = original.args
            exc.__dict__.update(getattr(original, "__dict__", {}))
        exc.exc_type = exc_type
        return exc
    except Exception:  # layout conflicts, exotic __new__: keep the original type alone
        return original


def _remade(original: BaseException, mixed: type) -> Any:
    """``original`` made again as ``mixed`` the way unpickling made it, by its constructor with what its
    ``__reduce__`` gives, so fields set by ``__init__`` (an OSError's filename, a SyntaxError's msg,
    a UnicodeDecodeError's reason) are kept, not only ``args``."""
    made = original.__reduce_ex__(2)
    if not (isinstance(made, tuple) and len(made) >= 2 and made[0] is type(original)):
        raise ValueError("a custom reduce")
    exc = mixed(*made[1])
    if len(made) > 2 and isinstance(made[2], dict):
        exc.__dict__.update(made[2])
    if str(exc) != str(original):  # a cooperative __init__ that made something else of its arguments
        raise ValueError("not remade")
    return exc
