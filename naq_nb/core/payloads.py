"""Job bodies and results over the server's max_payload: where each is offloaded and read back.

The object store itself (:func:`~naq_nb.core.blobs.offload`, :func:`~naq_nb.core.blobs.resolve`)
lives in :mod:`.blobs`; this module is where jobs and results meet it, one call each:

* job bodies: :func:`offload_jobs` at enqueue replaces a body over the limit by a
  reference (``MAGIC`` + JSON); :func:`open_body` at the worker resolves it before
  decoding; :func:`job_ended` deletes the object once the job succeeded or was
  cancelled (a failed job keeps it for ``naq failed requeue``; the bucket TTL ends it).
* results: :func:`offload_result` at the worker stores the whole result record and
  keeps only its JSON head in the results bucket, with ``blob`` naming the object;
  :func:`load_result` wherever a client reads a result; :func:`drop_result` when a
  result is purged. The object bucket has the results bucket's TTL.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from dataclasses import asdict
from typing import TYPE_CHECKING, Sequence, overload

import nats.errors
from nats.js.errors import KeyNotFoundError, NotFoundError

from .aftercancel import cancel_unheard, run_to_end
from .blobs import BlobRef, delete, inline_limit, new_name, offload, resolve
from .envelope import header_size
from .errors import BlobError, NaqConnectionError, PayloadTooLargeError, SerializationError
from .job import JobStatus
from .records import ResultRecord, exception_type_names
from .serialization import pack_record, unpack_record, verify
from .upload import TAKE_BACK_SECONDS

if TYPE_CHECKING:
    from .broker import Broker
    from .job import Job

__all__ = [
    "check_offloads",
    "offload_jobs",
    "drop_bodies",
    "fit_body",
    "open_body",
    "job_ended",
    "drop_queued_body",
    "offload_result",
    "load_result",
    "drop_result",
]

log = logging.getLogger("naq_nb.worker")


# --- job bodies ----------------------------------------------------------------------------------
def check_offloads(broker: "Broker", jobs: Sequence["Job"], encoded: Sequence[tuple[dict, bytes]]) -> None:
    """Raise :class:`PayloadTooLargeError` for a job whose headers and a reference to its stored body
    would not fit in one message. No I/O: an enqueue checks every job before it claims any id, and
    uploads only the bodies of the jobs it then publishes (a reused id's job is stored already)."""
    limit = inline_limit(broker)
    for job, (headers, body) in zip(jobs, encoded):
        head = header_size(headers)
        if head + len(body) <= limit:
            continue
        # As long as the real reference: a name, size and checksum of the same lengths.
        stand_in = BlobRef(broker.layout.objects_bucket, new_name("job", job.job_id), len(body), "0" * 64)
        ref_size = len(stand_in.to_body(broker.settings.signing_key))
        if head + ref_size > limit:
            raise PayloadTooLargeError(
                f"job {job.function_name}: its headers ({head:,} bytes) and a reference to its stored body "
                f"({ref_size:,} bytes) do not fit the server's max_payload of {broker.max_payload:,} bytes "
                f"(less {broker.max_payload - limit:,} kept free)"
            )


async def offload_jobs(
    broker: "Broker", jobs: Sequence["Job"], encoded: Sequence[tuple[dict, bytes]]
) -> list[tuple[dict, bytes]]:
    """``encoded`` (from ``encode_job``, signed) with each body over max_payload replaced by a reference
    (the caller ran :func:`check_offloads` first: every reference fits)."""
    out: list[tuple[dict, bytes]] = []
    limit = inline_limit(broker)
    try:
        for job, (headers, body) in zip(jobs, encoded):
            if header_size(headers) + len(body) > limit:
                ref = await offload(broker, body, broker.layout.objects_bucket, new_name("job", job.job_id))
                body = ref.to_body(broker.settings.signing_key)
            out.append((headers, body))
            if cancel_unheard():
                raise asyncio.CancelledError("the enqueue was cancelled during its uploads")
    except asyncio.CancelledError:
        # No job will name them. (Bounded: with the server gone, each delete would wait its own timeout.)
        bodies = [body for _h, body in out]
        await run_to_end(drop_bodies(broker, bodies), TAKE_BACK_SECONDS, "deleting a cancelled enqueue's uploads")
        raise
    return out


async def drop_bodies(broker: "Broker", bodies: Sequence[bytes]) -> None:
    """Delete the objects the offloaded ones of ``bodies`` name (their jobs were not stored by them)."""
    for body in bodies:
        ref = BlobRef.from_body(body)
        if ref is not None:
            await delete(broker, ref.bucket, ref.name)


async def fit_body(broker: "Broker", body: bytes, job_id: str, extra: int) -> bytes:
    """``body``, or a reference to it in the object store if ``extra`` more bytes around it would not fit
    in one message (a failed job's copy carries its record too)."""
    if BlobRef.from_body(body) is not None or extra + len(body) <= inline_limit(broker):
        return body
    ref = await offload(broker, body, broker.layout.objects_bucket, new_name("job", job_id))
    return ref.to_body(broker.settings.signing_key)


async def open_body(broker: "Broker", body: bytes, what: str = "job") -> bytes:
    """The job body itself: ``body`` unchanged, or the bytes its reference names (checked)."""
    ref = BlobRef.from_body(body)
    if ref is None:
        return body
    keys = broker.settings.signing_keys
    if keys and broker.serializer.name == "pickle":
        # Checked before downloading anything; the resolved body's own signature is checked after.
        _verify_any(keys, ref.canonical(), BlobRef.signature_in(body))
    return await resolve(broker, ref, f"the call of {what}")


def _verify_any(keys: Sequence[bytes], data: bytes, sig: str | None) -> None:
    """Accept a signature made by any configured key (rotation); raise the last refusal otherwise."""
    for i, key in enumerate(keys):
        try:
            verify(key, data, sig)
            return
        except SerializationError:
            if i == len(keys) - 1:
                raise


async def job_ended(broker: "Broker", body: bytes, status: str) -> None:
    """Delete an offloaded body once it can no longer be needed (succeeded or cancelled)."""
    ref = BlobRef.from_body(body)
    if ref is not None and status in (JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value):
        await delete(broker, ref.bucket, ref.name)


async def drop_queued_body(broker: "Broker", seq: int) -> None:
    """Delete the offloaded body of the job message at ``seq`` of the jobs stream (it is being cancelled)."""
    try:
        msg = await broker.js.get_msg(broker.layout.jobs_stream, seq)
    except NotFoundError:
        return
    ref = BlobRef.from_body(msg.data)
    if ref is not None:
        await delete(broker, ref.bucket, ref.name)


# --- results ---------------------------------------------------------------------------------
async def offload_result(broker: "Broker", data: bytes, job_id: str, tries: int = 1) -> bytes:
    """``data`` (a packed result record) as is, or its head with ``blob`` naming the stored record.

    The upload is tried up to ``tries`` times while the connection fails (a server restarting
    mid-upload); then its :class:`NaqConnectionError` is raised. A worker hands the job back then:
    an outage must not fail a job whose work is done."""
    if len(data) <= inline_limit(broker):
        return data
    meta, _ = unpack_record(data)
    bucket = broker.layout.result_objects_bucket
    for attempt in range(1, tries + 1):
        try:
            ref = await offload(broker, data, bucket, new_name("result", job_id))
            break
        except NaqConnectionError as exc:
            if attempt >= tries:
                raise
            log.warning("job %s: storing its result object failed (%s); trying again", job_id, exc)
            await asyncio.sleep(0.5 * attempt)
    # The id too: a reader whose download fails names the job from this head alone (load_result).
    return pack_record({**meta, "id": job_id, "blob": asdict(ref)})


@overload
async def load_result(broker: "Broker", rec: ResultRecord) -> ResultRecord: ...
@overload
async def load_result(broker: "Broker", rec: None) -> None: ...
async def load_result(broker: "Broker", rec: ResultRecord | None) -> ResultRecord | None:
    """``rec`` with its payload: fetched if it was offloaded; a failure record naming the problem
    if the object is missing or corrupted (so a waiter gets a clear error, never a hang)."""
    if rec is None or not rec.meta.get("blob"):
        return rec
    what = f"the result of job {rec.meta.get('id', '')}".strip()
    try:
        # The object is bound to the (sealed) record by its hash; a JSON-mode client refuses a pickle
        # in it as it would in the bucket.
        data = await resolve(broker, BlobRef.from_dict(rec.meta["blob"]), what)
        return ResultRecord.decode(data, rec.meta.get("id"), accept_pickle=broker.settings.serializer == "pickle")
    except (BlobError, nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
        if not isinstance(exc, BlobError):  # a connection problem: say so rather than leave a waiter hanging
            exc = BlobError(f"{what} could not be downloaded: {type(exc).__name__}: {exc}; read it again later")
        meta = rec.meta.copy()
        meta.pop("blob", None)
        meta.pop("ser", None)
        meta.update(
            {
                "status": JobStatus.FAILED.value,
                "error": str(exc),
                "traceback": "",
                "exc_type": exception_type_names(exc)[0],
                "exc_types": exception_type_names(exc),
                "ser": "pickle",
                "job_status": rec.status,
            }
        )
        return ResultRecord(meta, pickle.dumps(exc))


async def drop_result(broker: "Broker", job_id: str) -> None:
    """Delete the object of ``job_id``'s result, if it has one (call before purging the result)."""
    kv = await broker.kv(broker.layout.results_bucket)
    try:
        entry = await kv.get(job_id)
    except KeyNotFoundError:
        return
    if entry.value:
        blob = ResultRecord.decode(entry.value).meta.get("blob")
        if blob:
            ref = BlobRef.from_dict(blob)
            await delete(broker, ref.bucket, ref.name)
