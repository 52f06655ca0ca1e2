"""Where sweeps live on the server: the sweep record and the sweep result cache.

Both are in the meta bucket. A sweep record is a small JSON head under
``Layout.sweep_key(id)`` plus the body (points, job ids, cache digests and the
pickled function), zlib-compressed and cut into parts that each fit the
server's ``max_payload``; a 10,000-point sweep is a few parts. Parts are
versioned and the head is written last, so a reader never sees a half-written
record, and ``retry_failed`` can rewrite it.

The cache maps ``Layout.cache_key(sha256(function pickle, point))`` to the id
of the last job submitted for that call; the sweep only reuses it when that
job SUCCEEDED and its result still exists (checked when attaching to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import pickle
import zlib
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import cloudpickle
from nats.js.errors import KeyNotFoundError

from ..core.broker import CONNECTION_ERRORS
from ..core.errors import SerializationError
from .errors import SweepNotFoundError

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..core.job import JobOptions

log = logging.getLogger("naq_nb.sweep")

__all__ = ["SweepHead", "SweepBody", "SweepNotFoundError", "function_bytes", "function_digest", "point_digests",
           "cache_lookup", "cache_store", "save_record", "load_record"]

_CONCURRENCY = 256  # KV gets in flight: round trips, not server work, are the cost
_FORMAT = 1


class SweepHead(TypedDict):
    """A sweep record's JSON head (``Layout.sweep_key(id)``), written after its body parts."""

    id: str
    name: str | None
    function: str               # the function's name
    created: float
    n: int                      # points
    queue: str | None
    format: NotRequired[int]    # these four: set by save_record
    version: NotRequired[int]   # body parts are written per version; the head names the current one
    parts: NotRequired[int]
    bytes: NotRequired[int]     # the compressed body


class SweepBody(TypedDict):
    """A sweep record's body (pickled, compressed, cut into parts)."""

    points: list[dict[str, Any]]
    digests: list[str]          # per point: the cache key over the function pickle and the point
    fn: bytes                   # the function pickle
    options: JobOptions
    job_ids: NotRequired[list[str]]  # per point, once submitted


def function_bytes(fn: Any) -> bytes:
    """cloudpickle of the function: its code and the values it captured (the cache's identity of it)."""
    try:
        return cloudpickle.dumps(fn)
    except Exception as exc:
        raise SerializationError(f"the sweep function {fn!r} cannot be pickled: {type(exc).__name__}: {exc}") from None


def point_digests(fn_bytes: bytes, points: list[dict]) -> list[str]:
    """One sha256 per point over the function pickle and the point's kwargs (sorted by name)."""
    base = hashlib.sha256(fn_bytes).digest()
    out = []
    for i, p in enumerate(points):
        try:
            body = cloudpickle.dumps(sorted(p.items()))
        except Exception as exc:
            raise SerializationError(f"sweep point {i} {p!r} cannot be pickled: {type(exc).__name__}: {exc}") from None
        out.append(hashlib.sha256(base + body).hexdigest())
    return out


def function_digest(fn_bytes: bytes) -> str:
    """The key of the marker saying "this function has cached points" (one get skips a fresh sweep's lookups)."""
    return hashlib.sha256(b"fn:" + fn_bytes).hexdigest()


async def cache_lookup(b: "Broker", digests: list[str], fn_digest: str | None = None) -> dict[int, str]:
    """Point index -> id of the last job submitted for the same call (the caller checks it succeeded)."""
    lay = b.layout
    kv = await b.kv(lay.meta_bucket)
    if fn_digest is not None:
        try:
            await kv.get(lay.cache_key(fn_digest))
        except KeyNotFoundError:
            return {}  # this function never ran in a sweep here: no point can hit
    sem = asyncio.Semaphore(_CONCURRENCY)
    hits: dict[int, str] = {}

    async def one(i: int, digest: str) -> None:
        async with sem:
            try:
                entry = await kv.get(lay.cache_key(digest))
            except KeyNotFoundError:
                return
            if not entry.value:
                return
            hits[i] = entry.value.decode()

    await asyncio.gather(*(one(i, d) for i, d in enumerate(digests)))
    return hits


async def cache_store(b: "Broker", pairs: list[tuple[str, str]], fn_digest: str | None = None) -> None:
    """Map each digest to the job id just submitted for it (pipelined puts), then mark the function."""
    lay = b.layout
    acks = [await b.publish_async(lay.kv_subject(lay.meta_bucket, lay.cache_key(d)), jid.encode())
            for d, jid in pairs]
    if fn_digest is not None:
        acks.append(await b.publish_async(lay.kv_subject(lay.meta_bucket, lay.cache_key(fn_digest)), b"1"))
    await asyncio.gather(*acks)


def _part_key(b: "Broker", sweep_id: str, version: int, i: int) -> str:
    return b.layout.sweep_part_key(sweep_id, version, i)


async def save_record(b: "Broker", head: SweepHead, body: SweepBody) -> SweepHead:
    """Write the body parts of a new version, then the head; returns the head written."""
    kv = await b.kv(b.layout.meta_bucket)
    blob = zlib.compress(cloudpickle.dumps(body), 6)  # points may hold notebook-defined objects
    size = max(16 * 1024, b.max_payload - 4096)
    parts = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
    version = int(head.get("version", 0)) + 1
    old = head.get("version"), head.get("parts", 0)
    for i, part in enumerate(parts):
        await kv.put(_part_key(b, head["id"], version, i), part)
    head = {**head, "format": _FORMAT, "version": version, "parts": len(parts), "bytes": len(blob)}
    await kv.put(b.layout.sweep_key(head["id"]), json.dumps(head).encode())
    if old[0]:
        for i in range(old[1]):  # the previous version is no longer referenced
            try:
                await kv.purge(_part_key(b, head["id"], old[0], i))
            except CONNECTION_ERRORS as exc:  # the new version is stored: an old part left behind is only space
                log.warning("sweep %s: could not purge an old part: %s", head["id"], exc)
    return head


async def load_record(b: "Broker", sweep_id: str) -> tuple[SweepHead, SweepBody]:
    """The head and body of a sweep; :class:`SweepNotFoundError` if there is none."""
    kv = await b.kv(b.layout.meta_bucket)
    try:
        entry = await kv.get(b.layout.sweep_key(sweep_id))
    except KeyNotFoundError:
        raise SweepNotFoundError(f"no sweep with id {sweep_id!r} (never created here, or its record expired)") from None
    head = json.loads(entry.value or b"")
    if head.get("format") != _FORMAT:
        raise SerializationError(f"sweep {sweep_id} has record format {head.get('format')!r}; "
                                 f"this naq_nb reads format {_FORMAT}")
    chunks = []
    for i in range(head["parts"]):
        try:
            chunks.append((await kv.get(_part_key(b, sweep_id, head["version"], i))).value or b"")
        except KeyNotFoundError:
            raise SweepNotFoundError(f"sweep {sweep_id}: part {i} of its record is missing") from None
    return cast(SweepHead, head), pickle.loads(zlib.decompress(b"".join(chunks)))  # as save_record wrote them
