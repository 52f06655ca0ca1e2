"""Where sweeps live on the server: the sweep record and the sweep result cache.

Both are in the meta bucket. A sweep record is a small JSON head under
``Layout.sweep_key(id)`` plus the body (points, job ids, cache digests and the
pickled function), zlib-compressed and cut into parts that each fit the
server's ``max_payload``; a 10,000-point sweep is a few parts. Parts are
versioned and the head is written last, so a reader never sees a half-written
record, and ``retry_failed`` can rewrite it.

The cache maps ``sha256(function pickle, point)`` to the id of the last job
submitted for that call; the sweep only reuses it when that job SUCCEEDED and
its result still exists (checked when attaching to it). The map is kept per
function in at most 256 JSON shards (``Layout.cache_shard_key``, by the first
two hex digits of the point's digest), merged with a revision check, so
storing or looking up a 10,000-point sweep takes a few hundred round trips,
not 10,000; ``Layout.cache_key(function digest)`` marks a function that has
any, so a new function costs one lookup.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import pickle
import sys
import zlib
from typing import TYPE_CHECKING, Any, Iterable, NotRequired, TypedDict, cast

import cloudpickle
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from ..core.broker import CONNECTION_ERRORS
from ..core.errors import SerializationError
from ..core.kvscan import read_keys
from .errors import SweepNotFoundError

if TYPE_CHECKING:
    from ..core.broker import Broker
    from ..core.job import JobOptions

log = logging.getLogger("naq_nb.sweep")

__all__ = [
    "SweepHead",
    "SweepBody",
    "SweepNotFoundError",
    "function_bytes",
    "function_key",
    "function_digest",
    "point_digests",
    "cache_lookup",
    "cache_store",
    "save_record",
    "load_record",
]

_CONCURRENCY = 64  # KV round trips in flight: round trips, not server work, are the cost
_SHARD_CHARS = 2  # cache records per function: 16 ** 2 = 256 at most
_MERGE_TRIES = 8
_FORMAT = 1


class SweepHead(TypedDict):
    """A sweep record's JSON head (``Layout.sweep_key(id)``), written after its body parts."""

    id: str
    name: str | None
    function: str  # the function's name
    created: float
    n: int  # points
    queue: str | None
    format: NotRequired[int]  # these four: set by save_record
    version: NotRequired[int]  # body parts are written per version; the head names the current one
    parts: NotRequired[int]
    bytes: NotRequired[int]  # the compressed body


class SweepBody(TypedDict):
    """A sweep record's body (pickled, compressed, cut into parts)."""

    points: list[dict[str, Any]]
    digests: list[str]  # per point: the cache key over the function pickle and the point
    fn: bytes  # the function pickle
    options: JobOptions
    job_ids: NotRequired[list[str]]  # per point, once submitted


def function_bytes(fn: Any) -> bytes:
    """cloudpickle of the function: its code and the values it captured (the cache's identity of it)."""
    try:
        return cloudpickle.dumps(fn)
    except Exception as exc:
        raise SerializationError(f"the sweep function {fn!r} cannot be pickled: {type(exc).__name__}: {exc}") from None


def function_key(fn: Any, fn_bytes: bytes) -> bytes:
    """The cache's identity of a sweep function: its pickle and, for a function an importable module
    defines, the contents of that module's source file. cloudpickle stores such a function by name
    only, so without the file an edited module would be served its old results. (A notebook's own
    function is pickled by value: its code is in the pickle already.)"""
    path = _module_file(fn)
    if path is None:
        return fn_bytes
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:  # a module without a readable file: its name is all there is
        return fn_bytes
    return fn_bytes + b"\0module-source:" + hashlib.sha256(source).digest()


def _module_file(fn: Any) -> str | None:
    """The file of the module that defines ``fn`` (a partial's function, a method's, a callable's class)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    target = getattr(fn, "__func__", fn)
    if not hasattr(target, "__module__") or not hasattr(target, "__qualname__"):
        target = type(target)  # a callable object: its class's module
    name = getattr(target, "__module__", None)
    module = sys.modules.get(name) if isinstance(name, str) and name != "__main__" else None
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None


def point_digests(fn_key: bytes, points: list[dict]) -> list[str]:
    """One sha256 per point over the function's key (:func:`function_key`) and the point's kwargs
    (sorted by name)."""
    base = hashlib.sha256(fn_key).digest()
    out = []
    for i, p in enumerate(points):
        try:
            body = cloudpickle.dumps(sorted(p.items()))
        except Exception as exc:
            raise SerializationError(f"sweep point {i} {p!r} cannot be pickled: {type(exc).__name__}: {exc}") from None
        out.append(hashlib.sha256(base + body).hexdigest())
    return out


def function_digest(fn_key: bytes) -> str:
    """The key of the marker saying "this function has cached points" (one get skips a fresh sweep's lookups)."""
    return hashlib.sha256(b"fn:" + fn_key).hexdigest()


def _shard(digest: str) -> str:
    return digest[:_SHARD_CHARS]


async def _shard_tables(b: "Broker", fn_digest: str, shards: Iterable[str]) -> dict[str, dict]:
    """The stored tables of ``shards`` (point digest -> job id); absent shards are left out."""
    lay = b.layout
    keys = {lay.cache_shard_key(fn_digest, s): s for s in shards}
    values = await read_keys(b, lay.meta_bucket, list(keys))  # up to 256 shards: one request
    tables = {keys[k]: _decode_table(v) for k, v in values.items()}
    return {s: t for s, t in tables.items() if t}


def _decode_table(value: bytes | None) -> dict:
    try:
        table = json.loads(value or b"{}")
    except ValueError as exc:  # a damaged shard only costs its points a rerun
        log.warning("sweep cache shard unreadable (%s): its points run again", exc)
        return {}
    return table if isinstance(table, dict) else {}


async def cache_lookup(b: "Broker", digests: list[str], fn_digest: str) -> dict[int, str]:
    """Point index -> id of the last job submitted for the same call (the caller checks it succeeded)."""
    lay = b.layout
    kv = await b.kv(lay.meta_bucket)
    try:
        await kv.get(lay.cache_key(fn_digest))
    except KeyNotFoundError:
        return {}  # this function never ran in a sweep here: no point can hit
    tables = await _shard_tables(b, fn_digest, {_shard(d) for d in digests})
    hits: dict[int, str] = {}
    for i, d in enumerate(digests):
        jid = tables.get(_shard(d), {}).get(d)
        if isinstance(jid, str) and jid:
            hits[i] = jid
    return hits


async def _merge_shard(b: "Broker", kv: Any, key: str, entries: dict[str, str]) -> None:
    """Add ``entries`` to one shard: read, merge, write with the revision read (a concurrent
    sweep of the same function makes the write fail; it is then read and merged again)."""
    for _ in range(_MERGE_TRIES):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        table = {**(_decode_table(entry.value) if entry is not None else {}), **entries}
        data = json.dumps(table, separators=(",", ":")).encode()
        if len(data) > b.max_payload - 1024:  # millions of points of one function: that shard stays as it was
            log.warning("sweep cache shard %s is full (%d entries); new points in it are not cached", key, len(table))
            return
        try:
            if entry is None:
                await kv.create(key, data)
            else:
                await kv.update(key, data, last=entry.revision)
            return
        except KeyWrongLastSequenceError:
            continue  # written meanwhile: merge again
    raise SerializationError(f"sweep cache shard {key} kept changing under {_MERGE_TRIES} writes")


async def cache_store(b: "Broker", pairs: list[tuple[str, str]], fn_digest: str) -> None:
    """Map each point digest to the job id just submitted for it, then mark the function.

    One KV record per shard (the first two hex digits of the digest), not per point:
    a 10,000-point sweep costs at most 256 writes.
    """
    lay = b.layout
    kv = await b.kv(lay.meta_bucket)
    by_shard: dict[str, dict[str, str]] = {}
    for d, jid in pairs:
        by_shard.setdefault(_shard(d), {})[d] = jid
    sem = asyncio.Semaphore(_CONCURRENCY)

    async def one(shard: str, entries: dict[str, str]) -> None:
        async with sem:
            await _merge_shard(b, kv, lay.cache_shard_key(fn_digest, shard), entries)

    await asyncio.gather(*(one(s, e) for s, e in by_shard.items()))
    await kv.put(lay.cache_key(fn_digest), b"1")


def _part_key(b: "Broker", sweep_id: str, version: int, i: int) -> str:
    return b.layout.sweep_part_key(sweep_id, version, i)


async def save_record(b: "Broker", head: SweepHead, body: SweepBody) -> SweepHead:
    """Write the body parts of a new version, then the head; returns the head written."""
    kv = await b.kv(b.layout.meta_bucket)
    blob = zlib.compress(cloudpickle.dumps(body), 6)  # points may hold notebook-defined objects
    size = max(16 * 1024, b.max_payload - 4096)
    parts = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
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
        raise SerializationError(
            f"sweep {sweep_id} has record format {head.get('format')!r}; this naq_nb reads format {_FORMAT}"
        )
    chunks = []
    for i in range(head["parts"]):
        try:
            chunks.append((await kv.get(_part_key(b, sweep_id, head["version"], i))).value or b"")
        except KeyNotFoundError:
            raise SweepNotFoundError(f"sweep {sweep_id}: part {i} of its record is missing") from None
    return cast(SweepHead, head), pickle.loads(zlib.decompress(b"".join(chunks)))  # as save_record wrote them
