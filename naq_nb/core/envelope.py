"""The job message on the wire: headers with the job's metadata, body with the call.

Headers: ``Nats-Msg-Id`` (JetStream de-duplication), ``Naq-Meta`` (JSON: id,
queue, function name, serializer, retry policy, timeout, dependencies, result
TTL, enqueue time) and ``Naq-Sig`` (HMAC of the job id, ``Naq-Meta`` and body, when a signing key is set).
The body is the serializer's encoding of ``(function, args, kwargs)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Required, Sequence, cast

from . import jsontext
from .errors import ConfigurationError, PayloadTooLargeError, SerializationError
from .job import MAX_DEPENDENCIES, Job, JobOptions, OptionsMeta, func_name
from .layout import QUEUE_NAME_RE, WIRE_ID_RE
from .retry import MAX_DELAY, MAX_DELAYS, MAX_RETRIES, RetryPolicy
from .serialization import Serializer, sign_job, verify_job
from .status import StatusRecord, first_record, json_number, json_text

__all__ = [
    "encode_job",
    "header_size",
    "MetaHeader",
    "JobMeta",
    "decode_meta",
    "meta_first_record",
    "meta_record_fields",
    "header_meta",
    "decode_call",
    "check_call",
    "HEADER_META",
    "HEADER_SIG",
    "HEADER_MSG_ID",
]

HEADER_META = "Naq-Meta"
HEADER_SIG = "Naq-Sig"
HEADER_MSG_ID = "Nats-Msg-Id"
_HEADROOM = 512  # protocol framing around headers and body


class MetaHeader(OptionsMeta, total=False):
    """The ``Naq-Meta`` header (JSON) of a job message: all a worker reads before it opens the body."""

    v: int  # format version
    id: Required[str]  # job id (a schedule's occurrence: ``<schedule id>-<due ms>``)
    q: Required[str]  # queue
    fn: str  # function name, for listings and errors
    ser: str  # "pickle" | "json"
    ts: float  # enqueued at (epoch seconds)
    due: float  # fired by the scheduler: when it was due
    sched: str  # fired by the scheduler: the schedule id
    rt: str  # the enqueuing client's result inbox token (see Layout.reply_subject)


def encode_job(
    job: Job,
    ser: Serializer,
    *,
    signing_key: bytes = b"",
    max_payload: int,
    dumps_call: Callable[[Callable[..., Any] | str, tuple, dict], bytes] | None = None,
) -> tuple[dict, bytes]:
    """``(headers, body)`` of ``job``'s message; :class:`PayloadTooLargeError` over ``max_payload``.
    ``dumps_call``: ``ser``'s, or its ``batch_dumps_call()`` when encoding many jobs in a row."""
    body = (dumps_call or ser.dumps_call)(job.function, job.args, job.kwargs)
    # The MetaHeader written out (what json.dumps of the dict gives, in the same order): every job of
    # an enqueue_many pays for this, and its options part is encoded once per options object.
    t = json_text
    meta = (
        f'{{"v":1,"id":{t(job.job_id)},"q":{t(job.queue_name)},"fn":{t(func_name(job.function))},'
        f'"ser":{t(ser.name)},"ts":{json_number(job.enqueue_time)},{job.options.meta_json}'
        + (f',"rt":{t(job.reply)}}}' if job.reply else "}")
    )
    headers = {HEADER_MSG_ID: job.options.key or job.job_id, HEADER_META: meta}
    if signing_key:  # covers the id, the options and queue (Naq-Meta) and the body
        headers[HEADER_SIG] = sign_job(signing_key, job.job_id, meta, body)
    size = len(body) + header_size(headers) + _HEADROOM
    if size > max_payload:
        raise PayloadTooLargeError(
            f"job {job.function_name} is {len(body):,} bytes serialized, over the server's max_payload of "
            f"{max_payload:,} bytes: a scheduled or delayed job is stored whole with its schedule; pass "
            "large values as nq.put(value) references (kept NAQ_STATUS_TTL), a path or URL, or raise max_payload"
        )
    return headers, body


def header_size(headers: dict) -> int:
    """About the bytes ``headers`` take in a message: keys, values and 4 bytes of framing each."""
    return sum(map(len, headers)) + sum(map(len, headers.values())) + 4 * len(headers)


@dataclass
class JobMeta:
    job_id: str
    queue: str
    function: str
    serializer: str
    enqueued_at: float
    options: JobOptions
    raw: MetaHeader  # the header as sent (checked field by field by decode_meta)
    reply: str | None = None  # result inbox token of the client that enqueued it

    @property
    def retry(self) -> RetryPolicy:
        return self.options.retry


def header_meta(value: Any) -> dict:
    """A ``Naq-Meta`` header's JSON object, or {} for anything else (unchecked: for finding and
    naming a message, which may be hand-published: no header, bad JSON, not an object, bytes)."""
    if not isinstance(value, str):
        return {}
    try:
        meta = jsontext.loads(value)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def decode_meta(headers: dict | None) -> JobMeta:
    """The job's metadata from its headers, every value checked before anything runs.

    Raises :class:`SerializationError` naming the first bad field: the worker then
    moves the message to the failed stream instead of running (or nak-looping) it.
    """
    raw_meta = headers.get(HEADER_META) if isinstance(headers, dict) else None
    if not raw_meta:
        raise SerializationError("message has no Naq-Meta header: not a naq_nb job")
    if not isinstance(raw_meta, str):
        raise SerializationError(f"Naq-Meta header must be text, not {type(raw_meta).__name__}")
    if len(raw_meta) > _MAX_META:
        raise SerializationError(f"Naq-Meta header is {len(raw_meta):,} characters, over {_MAX_META:,}")
    try:
        m = _META_DECODER.decode(raw_meta)
    except (ValueError, RecursionError) as exc:  # (as jsontext.loads, inline: every message comes here)
        raise SerializationError(f"malformed Naq-Meta header: {exc}") from None
    if not isinstance(m, dict):
        raise SerializationError(f"malformed Naq-Meta header: a JSON object is needed, not {type(m).__name__}")
    try:
        job_id = _wire_id(m.get("id"), "id")
        queue = m.get("q")
        if not isinstance(queue, str) or not QUEUE_NAME_RE.fullmatch(queue):
            raise ValueError(f"q (queue) must be 1-64 letters, digits, '_' or '-', not {queue!r}")
        deps = _deps(m.get("deps"), job_id)
        opts = JobOptions(
            queue=queue,
            retry=_retry(m.get("retry")),
            timeout=_positive(m, "timeout"),
            depends_on=deps,
            result_ttl=_positive(m, "rttl"),
            job_id=job_id,
            name=_text(m, "name", 1000),
        )
        ser = m.get("ser", "pickle")
        if ser not in _SERIALIZERS:
            raise ValueError(f"ser must be one of {_SERIALIZERS}, not {ser!r}")
        ts = _number(m.get("ts", 0.0), "ts")
        if m.get("due") is not None:
            _number(m["due"], "due")
        _text(m, "sched", 300)
        reply = _wire_id(m["rt"], "rt (result inbox)") if m.get("rt") is not None else None
        fn = _text(m, "fn", 1000) or "?"
        return JobMeta(job_id, queue, fn, ser, ts, opts, cast(MetaHeader, m), reply)  # checked above
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"bad Naq-Meta header: {exc}") from None


_MAX_META = 64 * 1024
_SERIALIZERS = ("pickle", "json")
_RETRY_KEYS = {"max_retries", "backoff", "delay", "max_delay", "jitter", "retry_on", "ignore_on"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number here")


_META_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # made once: json.loads would make one per call


def _wire_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not WIRE_ID_RE.fullmatch(value):
        raise ValueError(f"{what} must be 1-160 letters, digits, '_' or '-', not {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    """A finite int or float (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _positive(m: dict, key: str) -> float | None:
    value = m.get(key)
    if value is None:
        return None
    if _number(value, key) <= 0:
        raise ValueError(f"{key} must be > 0, not {value!r}")
    return float(value)


def _text(m: dict, key: str, limit: int) -> str | None:
    value = m.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise ValueError(f"{key} must be a string of at most {limit} characters, not {value!r:.80}")
    return value


def _deps(value: Any, job_id: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_DEPENDENCIES:
        raise ValueError(f"deps must be a list of at most {MAX_DEPENDENCIES} job ids, not {value!r:.80}")
    deps = tuple(_wire_id(d, "deps entry") for d in value)
    if job_id in deps:
        raise ValueError(f"job {job_id} depends on itself")
    return deps


_RETRY_CACHE: dict[str, RetryPolicy] = {}  # checked policies by repr of their header value (most jobs share a few)


def _retry(value: Any) -> RetryPolicy:
    # repr, not the dict: a key must tell True from 1 and 1 from 1.0 (booleans are refused below).
    key = repr(value)
    policy = _RETRY_CACHE.get(key)
    if policy is None:
        policy = _check_retry(value)
        if len(_RETRY_CACHE) >= 256:
            _RETRY_CACHE.clear()
        _RETRY_CACHE[key] = policy
    return policy


def _check_retry(value: Any) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if not isinstance(value, dict) or set(value) - _RETRY_KEYS:
        raise ValueError(f"retry must be an object with keys {sorted(_RETRY_KEYS)}, not {value!r:.80}")
    n = value.get("max_retries", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_RETRIES:
        raise ValueError(f"retry.max_retries must be an int in [0, {MAX_RETRIES}], not {n!r}")
    for key in ("delay", "max_delay", "jitter"):
        if key in value and not 0 <= _number(value[key], f"retry.{key}") <= MAX_DELAY:
            raise ValueError(f"retry.{key} must be within [0, {MAX_DELAY:g}], not {value[key]!r}")
    backoff = value.get("backoff", "fixed")
    if isinstance(backoff, list):
        if not 0 < len(backoff) <= MAX_DELAYS:
            raise ValueError(f"retry.backoff list must hold 1-{MAX_DELAYS} delays")
        backoff = tuple(_number(d, "retry.backoff entry") for d in backoff)
        if not all(0 <= d <= MAX_DELAY for d in backoff):
            raise ValueError(f"retry.backoff delays must be within [0, {MAX_DELAY:g}]")
    elif not isinstance(backoff, str):
        raise ValueError(f"retry.backoff must be a name or a list of delays, not {backoff!r}")
    names = {}
    for key in ("retry_on", "ignore_on"):
        names[key] = value.get(key, [])
        if not isinstance(names[key], list) or not all(isinstance(t, str) and t for t in names[key]):
            raise ValueError(f"retry.{key} must be a list of exception names, not {names[key]!r:.80}")
    try:
        return RetryPolicy(
            max_retries=n,
            backoff=backoff,
            delay=value.get("delay", 0.0),
            max_delay=value.get("max_delay", 3600.0),
            jitter=value.get("jitter", 0.0),
            retry_on=tuple(names["retry_on"]),
            ignore_on=tuple(names["ignore_on"]),
        )
    except ConfigurationError as exc:
        raise ValueError(f"retry: {exc}") from None


def check_call(
    meta: JobMeta, headers: dict | None, body: bytes, ser: Serializer, signing_key: bytes | Sequence[bytes] = b""
) -> None:
    """Everything :func:`decode_call` checks before unpickling (signature, serializer). The signature
    comes first: until it verifies, nothing in the header is the job's (a forged header naming another
    serializer must not pass for that job's own failure)."""
    # Checked before the serializer runs: nothing from an unsigned message is unpickled or imported.
    verify_job(signing_key, meta.job_id, (headers or {}).get(HEADER_META, ""), body, (headers or {}).get(HEADER_SIG))
    if meta.serializer != ser.name:
        raise SerializationError(
            f"job was serialized with {meta.serializer!r} but this worker only accepts "
            f"{ser.name!r} (NAQ_JOB_SERIALIZER)"
        )


def decode_call(
    meta: JobMeta, headers: dict | None, body: bytes, ser: Serializer, signing_key: bytes | Sequence[bytes] = b""
) -> tuple[Callable[..., Any], tuple, dict]:
    check_call(meta, headers, body, ser, signing_key)
    return ser.loads_call(body)


def meta_record_fields(meta: JobMeta) -> dict[str, Any]:
    """What every status record of a job repeats from its message: function, name, enqueue time, dependencies."""
    return {
        "func": meta.function,
        "name": meta.options.name,
        "enqueued_at": meta.enqueued_at,
        "depends_on": list(meta.options.depends_on),
    }


def meta_first_record(meta: JobMeta, status: str, **fields: Any) -> StatusRecord:
    """:func:`first_record` of a job read back from its message (``meta``: its decoded header)."""
    return first_record(meta.job_id, meta.queue, status, **meta_record_fields(meta), **fields)
