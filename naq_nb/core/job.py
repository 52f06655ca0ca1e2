"""Jobs: the options a job runs with, the job itself, and its status values.

Options are kept apart from the function's own arguments: :class:`JobOptions`
is built from keyword options that are checked by name, so an unknown option
raises instead of being passed to (or hidden from) the function.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Callable, Sequence, TypedDict

from .errors import ConfigurationError
from .jobview import NaqJobView
from .layout import JOB_ID_RE, validate_job_id, validate_queue_name
from .retry import RetryPolicy
from .status import TERMINAL, JobStatus

MAX_DEPENDENCIES = 1000  # jobs one job may wait on (a worker refuses more as a malformed message)

__all__ = ["JobStatus", "JobOptions", "Job", "new_job_id", "TERMINAL", "func_name", "validate_job_id"]


_id_lock = threading.Lock()
_id_pool = b""  # random bytes fetched 4 KiB at a time: one system call per 256 ids, not one per id
_id_pos = 0


def _reset_ids() -> None:
    global _id_pool, _id_pos
    _id_pool, _id_pos = b"", 0


os.register_at_fork(after_in_child=_reset_ids)  # a forked child must never repeat its parent's ids


def new_job_id() -> str:
    """32 hex digits of 128 bits from ``os.urandom`` (as ``uuid4().hex``, without the version bits)."""
    global _id_pool, _id_pos
    with _id_lock:
        if _id_pos + 16 > len(_id_pool):
            _id_pool, _id_pos = os.urandom(4096), 0
        raw = _id_pool[_id_pos : _id_pos + 16]
        _id_pos += 16
    return raw.hex()


def func_name(fn: Any) -> str:
    if isinstance(fn, str):
        return fn
    mod = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{mod}.{qual}"


MIN_RESULT_TTL = 1.0  # seconds a job's result is kept at the least


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value <= 0:  # NaN compares false with everything: test it explicitly
        raise ConfigurationError(f"{what} must be a finite positive number of seconds, not {value!r}")
    return float(value)


def _dep_ids(depends_on: Any) -> tuple[str, ...]:
    if depends_on is None:
        return ()
    items = depends_on if isinstance(depends_on, (list, tuple, set, frozenset)) else [depends_on]
    if len(items) > MAX_DEPENDENCIES:
        raise ConfigurationError(f"depends_on may name at most {MAX_DEPENDENCIES:,} jobs, not {len(items):,}")
    ids = []
    for d in items:
        jid = d if isinstance(d, str) else getattr(d, "job_id", None)
        if not isinstance(jid, str) or not JOB_ID_RE.fullmatch(jid):
            raise ConfigurationError(f"depends_on entries must be jobs or job ids, not {d!r}")
        ids.append(jid)
    return tuple(ids)


class OptionsMeta(TypedDict, total=False):
    """A job's options in its ``Naq-Meta`` header (the rest of the header: :class:`~.envelope.MetaHeader`)."""

    retry: dict[str, Any]  # RetryPolicy.to_dict()
    timeout: float | None
    deps: list[str]  # depends_on
    rttl: float | None  # result_ttl
    name: str | None


@dataclass(frozen=True)
class JobOptions:
    """How a job runs. Build with :meth:`build` to validate every option by name.

    * ``queue``: queue name (default from ``NAQ_DEFAULT_QUEUE``).
    * ``retry``: a :class:`RetryPolicy`; or naq's ``max_retries`` / ``retry_delay``.
    * ``timeout``: seconds the function may run per attempt.
    * ``depends_on``: jobs (or ids) that must succeed first.
    * ``result_ttl``: seconds the result is kept (capped by ``NAQ_RESULT_TTL``).
    * ``job_id``: choose the id; ``key``: an idempotency key. Either names one call:
      enqueuing the same call again returns that job (``duplicate`` is True), another
      call with it raises :class:`DuplicateJobError` (claims are kept ``NAQ_STATUS_TTL``).
    * ``name``: a display name.
    """

    queue: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    depends_on: tuple[str, ...] = ()
    result_ttl: float | None = None
    job_id: str | None = None
    key: str | None = None
    name: str | None = None

    @classmethod
    def names(cls) -> set[str]:
        """Every option name :meth:`build` takes, naq's (``max_retries``, ``retry_delay``, ``queue_name``) included."""
        return {f.name for f in fields(cls)} | {"max_retries", "retry_delay", "queue_name"}

    @classmethod
    def build(cls, base: "JobOptions | None" = None, **opts: Any) -> "JobOptions":
        """Validated options; unknown names raise ``TypeError`` with a suggestion."""
        if not opts:  # frozen: the same options, and their cached meta_json, serve every plain enqueue
            return base or cls()
        unknown = set(opts) - cls.names()
        if unknown:
            bad = sorted(unknown)[0]
            hint = difflib.get_close_matches(bad, sorted(cls.names()), n=1)
            raise TypeError(
                f"unknown job option {bad!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (options: {', '.join(sorted(cls.names()))})"
            )
        o = base or cls()
        if "queue_name" in opts:
            opts.setdefault("queue", opts.pop("queue_name"))
        if "max_retries" in opts or "retry_delay" in opts:
            if "retry" in opts:
                raise ConfigurationError("give either retry=RetryPolicy(...) or max_retries/retry_delay, not both")
            opts["retry"] = RetryPolicy.from_naq(opts.pop("max_retries", 0), opts.pop("retry_delay", 0))
        if "retry" in opts:
            r = opts["retry"]
            if isinstance(r, int) and not isinstance(r, bool):
                opts["retry"] = RetryPolicy(max_retries=r)
            elif isinstance(r, dict):
                try:
                    opts["retry"] = RetryPolicy(**r)
                except TypeError as exc:  # an unknown key: name it and what a policy takes
                    raise ConfigurationError(f"retry={r!r}: {exc} (see RetryPolicy)") from None
            elif r is None:
                opts["retry"] = RetryPolicy()
            elif not isinstance(r, RetryPolicy):
                raise ConfigurationError(f"retry must be a RetryPolicy, an int or a dict, not {r!r}")
        if opts.get("queue") is not None:
            validate_queue_name(opts["queue"])
        if opts.get("name") is not None and not isinstance(opts["name"], str):
            raise TypeError(f"name must be a string, not {type(opts['name']).__name__}: {opts['name']!r}")
        if "timeout" in opts:
            opts["timeout"] = _seconds(opts["timeout"], "timeout")
        if "result_ttl" in opts:
            opts["result_ttl"] = _seconds(opts["result_ttl"], "result_ttl")
            if opts["result_ttl"] is not None and opts["result_ttl"] < MIN_RESULT_TTL:
                # A result gone before anyone could read it: every read would wait out its timeout.
                raise ConfigurationError(
                    f"result_ttl must be at least {MIN_RESULT_TTL:g} second, not {opts['result_ttl']!r}"
                )
        if "depends_on" in opts:
            opts["depends_on"] = _dep_ids(opts["depends_on"])
        for k in ("job_id", "key"):
            v = opts.get(k)
            if v is not None and (not isinstance(v, str) or not JOB_ID_RE.fullmatch(v)):
                raise ConfigurationError(f"{k} must be 1-128 letters, digits, '_' or '-', not {v!r}")
        built = replace(o, **opts)
        if built.job_id is not None and built.job_id in built.depends_on:
            raise ConfigurationError(f"job {built.job_id} cannot depend on itself (depends_on names its own job_id)")
        return built

    def to_meta(self) -> OptionsMeta:
        """These options as they travel in the job's ``Naq-Meta`` header."""
        return {
            "retry": self.retry.to_dict(),
            "timeout": self.timeout,
            "deps": list(self.depends_on),
            "rttl": self.result_ttl,
            "name": self.name,
        }

    @functools.cached_property
    def meta_json(self) -> str:
        """:meth:`to_meta` as the members of a JSON object (no braces), made once per options object:
        the jobs of a batch share their options, and this was much of the cost of each job's header."""
        return json.dumps(self.to_meta(), separators=(",", ":"))[1:-1]


@dataclass
class Job(NaqJobView):
    """A job as it was enqueued. ``job_id`` is its handle everywhere.

    naq-compatible attributes: ``job_id``, ``queue_name``, ``function``, ``args``,
    ``kwargs``, ``max_retries``, ``retry_delay``, ``depends_on``, ``timeout``,
    ``enqueue_time``; and (see :mod:`.jobview`) ``status``, ``error``, ``traceback``,
    ``result_ttl``, ``retry_strategy``, ``fetch_result()``, ``fetch_result_sync()``.
    """

    job_id: str
    queue_name: str
    function: Callable[..., Any] | str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)
    enqueue_time: float = field(default_factory=time.time)
    sequence: int | None = None  # stream sequence once published
    duplicate: bool = False  # JetStream dropped it as a duplicate of an earlier enqueue
    unrecorded: bool = False  # stored, but its queued status record was not (it shows once a worker takes it)
    reply: str | None = None  # the enqueuing client's result inbox token: the worker pushes the result there

    def __getstate__(self) -> dict[str, Any]:
        # A handle pickles (as another job's argument, as naq's examples pass one) without the client
        # that enqueued it, which holds a connection and tasks; unpickled, it reads through the shared one.
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    @property
    def id(self) -> str:
        """The job id (``job_id``)."""
        return self.job_id

    @property
    def max_retries(self) -> int:
        """Retries after the first failure (naq's name; the retry policy's ``max_retries``)."""
        return self.options.retry.max_retries

    @property
    def retry_delay(self) -> float | Sequence[float]:
        """Seconds before a retry, or the list of delays (naq's name)."""
        b = self.options.retry.backoff
        return list(b) if isinstance(b, tuple) else self.options.retry.delay

    @property
    def depends_on(self) -> list[str]:
        """The ids of the jobs this one waits for."""
        return list(self.options.depends_on)

    @property
    def timeout(self) -> float | None:
        """Seconds the job may run, or None for no limit."""
        return self.options.timeout

    @property
    def function_name(self) -> str:
        """``module.qualname`` of the function (or the import path it was given as)."""
        return func_name(self.function)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, {self.function_name}, queue={self.queue_name!r})"
