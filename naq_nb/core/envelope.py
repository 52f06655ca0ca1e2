"""The job message on the wire: headers with the job's metadata, body with the call.

Headers: ``Nats-Msg-Id`` (JetStream de-duplication), ``Naq-Meta`` (JSON: id,
queue, function name, serializer, retry policy, timeout, dependencies, result
TTL, enqueue time) and ``Naq-Sig`` (HMAC of the job id, ``Naq-Meta`` and body, when a signing key is set).
The body is the serializer's encoding of ``(function, args, kwargs)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import PayloadTooLargeError, SerializationError
from .job import Job, JobOptions, func_name
from .retry import RetryPolicy
from .serialization import Serializer, sign_job, verify_job

__all__ = ["encode_job", "JobMeta", "decode_meta", "decode_call", "HEADER_META", "HEADER_SIG", "HEADER_MSG_ID"]

HEADER_META = "Naq-Meta"
HEADER_SIG = "Naq-Sig"
HEADER_MSG_ID = "Nats-Msg-Id"
_HEADROOM = 512  # protocol framing around headers and body


def encode_job(job: Job, ser: Serializer, *, signing_key: bytes = b"", max_payload: int) -> tuple[dict, bytes]:
    body = ser.dumps_call(job.function, job.args, job.kwargs)
    meta = {"v": 1, "id": job.job_id, "q": job.queue_name, "fn": func_name(job.function), "ser": ser.name,
            "ts": job.enqueue_time, **job.options.to_meta()}
    headers = {HEADER_MSG_ID: job.options.key or job.job_id,
               HEADER_META: json.dumps(meta, separators=(",", ":"))}
    if signing_key:  # covers the id, the options and queue (Naq-Meta) and the body
        headers[HEADER_SIG] = sign_job(signing_key, job.job_id, headers[HEADER_META], body)
    size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + _HEADROOM
    if size > max_payload:
        raise PayloadTooLargeError(
            f"job {job.function_name} is {len(body):,} bytes serialized, over the server's max_payload of "
            f"{max_payload:,} bytes; pass large data by reference (a path or URL) or raise max_payload")
    return headers, body


@dataclass
class JobMeta:
    job_id: str
    queue: str
    function: str
    serializer: str
    enqueued_at: float
    options: JobOptions
    raw: dict

    @property
    def retry(self) -> RetryPolicy:
        return self.options.retry


def decode_meta(headers: dict | None) -> JobMeta:
    raw_meta = (headers or {}).get(HEADER_META)
    if not raw_meta:
        raise SerializationError("message has no Naq-Meta header: not a naq_nb job")
    try:
        m = json.loads(raw_meta)
        opts = JobOptions(queue=m["q"], retry=RetryPolicy.from_dict(m.get("retry")), timeout=m.get("timeout"),
                          depends_on=tuple(m.get("deps") or ()), result_ttl=m.get("rttl"), job_id=m["id"],
                          name=m.get("name"))
        return JobMeta(m["id"], m["q"], m.get("fn", "?"), m.get("ser", "pickle"), m.get("ts", 0.0), opts, m)
    except (ValueError, KeyError, TypeError) as exc:
        raise SerializationError(f"malformed Naq-Meta header: {type(exc).__name__}: {exc}") from None


def decode_call(meta: JobMeta, headers: dict | None, body: bytes, ser: Serializer,
                signing_key: bytes | Sequence[bytes] = b"") -> tuple[Callable[..., Any], tuple, dict]:
    if meta.serializer != ser.name:
        raise SerializationError(f"job was serialized with {meta.serializer!r} but this worker only accepts "
                                 f"{ser.name!r} (NAQ_JOB_SERIALIZER)")
    # Checked before the serializer runs: nothing from an unsigned message is unpickled or imported.
    verify_job(signing_key, meta.job_id, (headers or {}).get(HEADER_META, ""), body, (headers or {}).get(HEADER_SIG))
    return ser.loads_call(body)
