"""naq's attributes of a Job handle: ``status``, ``error``, ``traceback``,
``result_ttl``, ``retry_strategy``, ``fetch_result`` / ``fetch_result_sync``.

``result_ttl`` and ``retry_strategy`` come from the job's options. ``status``,
``error`` and ``traceback`` are read from the job's status record on each access
(one KV get), so they tell what the workers did, not what this process saw.
The engine owns no connection of its own, so the client layer registers the
readers here when it is imported (:func:`register_readers`); ``import naq_nb``
does that.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from .layout import WIRE_ID_RE
from .status import JobStatus

__all__ = ["NaqJobView", "register_readers"]

_readers: dict[str, Callable[..., Any]] = {}


def register_readers(
    *, record: Callable[[Any], dict], fetch: Callable[..., Any], fetch_sync: Callable[..., Any]
) -> None:
    """Called by the client layer: ``record(job) -> status record``, ``fetch``/``fetch_sync(job_or_id, ...)``."""
    _readers.update(record=record, fetch=fetch, fetch_sync=fetch_sync)


def _reader(name: str) -> Callable[..., Any]:
    fn = _readers.get(name)
    if fn is None:
        raise RuntimeError(f"Job.{name} needs naq_nb's client layer: import naq_nb first")
    return fn


class _StaticOrBound:
    """naq's ``Job.fetch_result(job_id, nats_url=...)`` is static, and naq's own examples call it on
    a handle too (``job.fetch_result_sync(job.job_id)``); on a handle, ``job.fetch_result()`` with no
    id fetches that job's own result. A first argument that is a job id (never a URL: those hold
    ``:`` or ``.``) is the job to fetch; anything else goes on as the handle's ``nats_url``."""

    def __init__(self, reader: str) -> None:
        self.reader = reader

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        fn = _reader(self.reader)
        if obj is None:
            return fn

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], str) and WIRE_ID_RE.fullmatch(args[0]):
                if args[0] == getattr(obj, "job_id", None):  # its own id: read through its own client
                    return fn(obj, *args[1:], **kwargs)
                return fn(*args, **kwargs)
            return fn(obj, *args, **kwargs)

        return call


class NaqJobView:
    """Mixed into :class:`naq_nb.core.job.Job`."""

    # The Job dataclass's JobOptions field, declared for the type checker; Any, because job.py imports this module.
    options: Any

    fetch_result = _StaticOrBound("fetch")
    fetch_result_sync = _StaticOrBound("fetch_sync")

    @property
    def result_ttl(self) -> float | None:
        """Seconds the result is kept (None: ``NAQ_RESULT_TTL``)."""
        return self.options.result_ttl

    @property
    def retry_strategy(self) -> str:
        """naq's name of the backoff: ``"exponential"``, else ``"linear"`` (a fixed delay or a list)."""
        return "exponential" if self.options.retry.backoff == "exponential" else "linear"

    @property
    def retry_on(self) -> tuple[str, ...]:
        return self.options.retry.retry_on

    @property
    def ignore_on(self) -> tuple[str, ...]:
        return self.options.retry.ignore_on

    @property
    def status(self) -> Any:
        """The job's current :class:`JobStatus`, read now (raises JobNotFoundError once the record expired)."""
        return JobStatus(_reader("record")(self)["status"])

    @property
    def error(self) -> str | None:
        """``"ExcType: message"`` of the last failure (failed or retrying), else None."""
        return _reader("record")(self).get("error") or None

    @property
    def traceback(self) -> str | None:
        """The worker-side traceback of the last failure, else None."""
        return _reader("record")(self).get("traceback") or None
