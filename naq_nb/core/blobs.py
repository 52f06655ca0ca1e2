"""Payloads larger than the server's max_payload, through the JetStream Object Store.

Two operations carry everything: :func:`offload` stores bytes that would not fit
in a message and returns a small :class:`BlobRef` (bucket, object name, size,
SHA-256); :func:`resolve` fetches them back and checks size and checksum. nats-py's
object store splits an object into 128 KiB chunks (any server with JetStream,
2.9 included). Buckets and TTLs come from :class:`~naq_nb.core.layout.Layout`;
they are created on first use, so jobs that fit in a message never touch them.

Where job bodies and results meet it: :mod:`.payloads`. Here, besides the two
operations:

* ``nq.put(value)``: :func:`put_value` stores the pickled value once (named by its
  checksum) and returns an :class:`ObjectRef`. Inside a job's body the reference
  unpickles as the value itself: :func:`fetch_objects` fetches the referenced
  objects (cached per process by checksum), so a 200-point sweep over one big
  DataFrame uploads it once and each worker downloads it once (:mod:`.sharedfuncs` stores a
  batch's big shared function the same way). A worker hands the bytes to the job process,
  which unpickles them (:func:`decode_with_fetched`): the worker's process holds one copy of
  each value's bytes, never a copy of the value per job.

Signing: a job body is signed before it is offloaded, so the signature covers the
very bytes the worker resolves and verifies before unpickling; the reference is
signed too (name, size and checksum), and checked before any download. A put value
is bound by the checksum its reference carries inside the signed body.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import json
import logging
import pickle
import secrets
import time
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, TypeVar

import cloudpickle
import nats.errors
from nats.js import api
from nats.js.errors import (
    APIError,
    BadRequestError,
    BucketNotFoundError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.object_store import OBJ_STREAM_TEMPLATE, ObjectStore

from . import jsontext
from .blobsink import ChunkSink
from .blobcopies import cache_get, cache_put, forget, keep_local_copies, recent_get, recent_put
from .makestores import create_store, created_elsewhere
from .download import read_chunks
from .errors import (
    JS_STORE_REFUSED,
    BlobError,
    NaqConnectionError,
    PublishTimeoutError,
    SerializationError,
    SignatureError,
)
from .layout import OBJECT_STORE_MAX_CONSUMERS
from .serialization import sign
from .singleflight import SingleFlight
from .upload import write_object

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "BlobError",
    "BlobRef",
    "ObjectRef",
    "offload",
    "resolve",
    "resolve_buffer",
    "delete",
    "new_name",
    "inline_limit",
    "put_value",
    "get_value",
    "delete_value",
    "decode_with_objects",
    "fetch_objects",
    "decode_with_fetched",
    "keep_local_copies",
    "put_bytes",
    "pickle_value",
    "MAGIC",
    "NO_LIMIT",
]

log = logging.getLogger("naq_nb")
T = TypeVar("T")

#: A job body that is a reference starts with this (pickle starts with 0x80, JSON with '[').
MAGIC = b"\x00naq-object\x00"
_HEADROOM = 1024  # protocol framing around headers and body
_CHUNK = 128 * 1024  # object store chunk (nats-py's default), smaller when the server's max_payload is
NO_LIMIT = 1 << 62  # encode_job's max_payload when offload_jobs checks the size afterwards
_STALL = 30.0  # seconds without a chunk before a download is declared stuck
_DOWNLOADS = 8  # downloads at once per connection (see _download_slot)
_UPDATE_WAIT = 2.0  # seconds an object store's limits update is waited for (see _fit_stream)


@dataclass(frozen=True)
class BlobRef:
    """Where offloaded bytes live and what they must hash to."""

    bucket: str
    name: str
    size: int
    sha256: str

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    def to_body(self, signing_key: bytes = b"") -> bytes:
        """The job body standing for the offloaded one; with a key, the reference itself is signed."""
        d: dict[str, Any] = asdict(self)
        if signing_key:
            d["sig"] = sign(signing_key, self.canonical())
        return MAGIC + json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_body(cls, body: bytes | None) -> "BlobRef | None":
        """The reference a job body holds, or None for an ordinary body."""
        return None if not body or not body.startswith(MAGIC) else cls.from_dict(_json(body[len(MAGIC) :]))

    @staticmethod
    def signature_in(body: bytes) -> str | None:
        """The signature a reference body carries (see :meth:`to_body`), if any."""
        sig = _json(body[len(MAGIC) :]).get("sig")
        return sig if isinstance(sig, str) else None

    @classmethod
    def from_dict(cls, d: Any) -> "BlobRef":
        try:
            return cls(str(d["bucket"]), str(d["name"]), int(d["size"]), str(d["sha256"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BlobError(f"malformed object reference {d!r}: {exc}") from None


def _json(data: bytes) -> Any:
    try:
        return jsontext.loads(data)
    except ValueError as exc:
        raise BlobError(f"malformed object reference: {exc}") from None


# --- the two operations ------------------------------------------------------------------------
_stores: "weakref.WeakKeyDictionary[Broker, dict[str, ObjectStore]]" = weakref.WeakKeyDictionary()
_download_slots: "weakref.WeakKeyDictionary[Broker, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
_ttls: "weakref.WeakKeyDictionary[Broker, dict[str, float]]" = weakref.WeakKeyDictionary()  # as the server has it
_uploads: "weakref.WeakKeyDictionary[Broker, SingleFlight[None]]" = weakref.WeakKeyDictionary()  # nq.put values
# Put values by checksum, in the buffer their download wrote into (resolve_buffer).
_downloads: "weakref.WeakKeyDictionary[Broker, SingleFlight[bytes | bytearray]]" = weakref.WeakKeyDictionary()


async def _store(broker: "Broker", bucket: str) -> ObjectStore:
    """The bucket's handle, created with its layout TTL if it does not exist yet. Only the layout's
    object buckets: a reference naming another (forged, or another deployment's) is a BlobError, and
    reading it must not leave a bucket that never expires behind."""
    cache = _stores.setdefault(broker, {})
    store = cache.get(bucket)
    if store is None:
        known = broker.layout.object_buckets()
        if bucket not in known:
            raise BlobError(
                f"object store {bucket!r} is not one of this deployment's ({', '.join(known)}): "
                "the reference was made by hand, or under another NAQ_PREFIX"
            )
        ttl = known[bucket]
        try:
            store = await broker.js.object_store(bucket)
        except BucketNotFoundError:
            cfg = api.ObjectStoreConfig(ttl=ttl, replicas=broker.layout.replicas, storage=api.StorageType.FILE)
            try:
                store = await create_store(
                    f"object store {bucket}", lambda: broker.js.create_object_store(bucket, config=cfg)
                )
            except BadRequestError:
                store = await created_elsewhere(lambda: broker.js.object_store(bucket))  # made by another first
        await _fit_stream(broker, bucket)
        cache[bucket] = store
    return store


async def _fit_stream(broker: "Broker", bucket: str) -> None:
    """Give the bucket's stream its record bucket's age limit and :data:`OBJECT_STORE_MAX_CONSUMERS`.

    The age limit: whoever made a bucket first set its TTL from their own settings, so a client with
    ``NAQ_RESULT_TTL=60`` and a worker left at 3 kept small results 60 s and big ones 3 s. The record
    bucket (made by ``ensure_layout``, first) decides for both. The consumer limit (nats-py has no
    setting for it): each download makes a consumer that the server keeps for seconds after it, and
    nats-server 2.15 allows a stream 1,000 unless the stream names a limit: a thousand reads in a row
    made the next one fail. A server that won't change the limit (before 2.12) has none by default."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    try:
        cfg = (await broker.js.stream_info(stream)).config
        _ttls.setdefault(broker, {})[bucket] = cfg.max_age or 0.0
        max_age = await _records_max_age(broker, bucket) or cfg.max_age
        consumers, age = cfg.max_consumers, cfg.max_age
        if consumers != OBJECT_STORE_MAX_CONSUMERS or age != max_age:
            cfg.max_consumers, cfg.max_age = OBJECT_STORE_MAX_CONSUMERS, max_age
            if max_age and (cfg.duplicate_window or 0) > max_age:  # the server refuses a longer one
                cfg.duplicate_window = max_age
            try:
                # Briefly: a role not allowed to update streams gets no answer at all.
                await asyncio.wait_for(broker.js.update_stream(cfg), _UPDATE_WAIT)
            except APIError:
                if age == max_age:
                    raise
                cfg.max_consumers = consumers  # refused by a server before 2.12: the age limit alone
                await asyncio.wait_for(broker.js.update_stream(cfg), _UPDATE_WAIT)
            _ttls[broker][bucket] = cfg.max_age or 0.0
    except (nats.errors.Error, asyncio.TimeoutError) as exc:  # (APIError is one): the reads still work
        log.debug("object store %s keeps its limits: %s", bucket, exc)


async def _records_max_age(broker: "Broker", bucket: str) -> float | None:
    """The age limit of the KV bucket whose records ``bucket``'s objects belong to (None: not made yet)."""
    records = broker.layout.kv_stream(broker.layout.object_record_buckets()[bucket])
    try:
        return (await broker.js.stream_info(records)).config.max_age or None
    except NotFoundError:
        return None


async def _sha256(data: bytes | bytearray) -> str:
    # About 0.1 s per 50 MB; hashlib releases the GIL, so the loop serving every future goes on meanwhile.
    return await asyncio.get_running_loop().run_in_executor(None, lambda: hashlib.sha256(data).hexdigest())


def new_name(kind: str, job_id: str = "") -> str:
    """A fresh object name (unique: two runs of one job never write over each other's object)."""
    return f"{kind}.{job_id + '.' if job_id else ''}{secrets.token_hex(6)}"


async def offload(broker: "Broker", data: bytes, bucket: str, name: str, *, shared: bool = False) -> BlobRef:
    """Store ``data`` as object ``name`` of ``bucket`` (chunked) and return its reference; ``shared``:
    the name is the content's (``nq.put``), and a cancel that lands once the object is whole keeps it.

    A lost, closed or unanswered connection raises :class:`NaqConnectionError`
    (:class:`PublishTimeoutError` for a timeout): the data is fine and the same call may succeed
    later, so a caller hands a job back or its enqueue fails as any publish does, where a
    :class:`BlobError` (a refusal of the object itself) is final."""
    ref = BlobRef(bucket, name, len(data), await _sha256(data))
    # nats-py's 128 KiB chunks do not fit a server whose max_payload is smaller.
    chunk = max(1024, min(_CHUNK, inline_limit(broker)))
    what = f"cannot store {len(data):,} bytes in object store {bucket!r} (object {name!r})"
    try:
        await _put(broker, bucket, name, data, ref.sha256, chunk, shared)
    except (NotFoundError, BadRequestError, nats.errors.MaxPayloadError) as exc:
        raise BlobError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except asyncio.TimeoutError as exc:  # (nats-py's TimeoutError is one; before OSError, which it also is)
        raise PublishTimeoutError(f"{what}: the upload was not acknowledged: {type(exc).__name__}: {exc}") from exc
    except APIError as exc:
        if exc.err_code in JS_STORE_REFUSED:  # a 503 too, but no outage: waiting for it ran a job 23 times
            raise BlobError(f"{what}: the server refused to store it: {exc.description}") from exc
        if isinstance(exc, ServiceUnavailableError):  # JetStream not up yet (a server restarting)
            raise NaqConnectionError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise  # another refusal by the server is the server's own news
    except (nats.errors.Error, OSError, NaqConnectionError) as exc:
        raise NaqConnectionError(f"{what}: the connection failed: {type(exc).__name__}: {exc}") from exc
    recent_put(ref.sha256, data)
    return ref


_STREAM_NOT_FOUND = 10059  # JetStream's error code for a stream that does not exist


async def _put(broker: "Broker", bucket: str, name: str, data: bytes, sha: str, chunk: int, shared: bool) -> None:
    """One upload (:func:`.upload.write_object`: an interrupted one deletes what it wrote). A bucket
    deleted since its handle was cached (by hand, or a server restarted without its store) is made
    again and the upload tried once more: the cached handle made every big enqueue and every big
    result fail with 'stream not found' for the life of the connection."""
    store = await _store(broker, bucket)
    try:
        await write_object(broker, store, bucket, name, data, sha, chunk, shared=shared)
    except (NotFoundError, NoStreamResponseError) as exc:
        if isinstance(exc, NotFoundError) and exc.err_code != _STREAM_NOT_FOUND:
            raise
        _stores.get(broker, {}).pop(bucket, None)
        log.warning("object store %s is gone (deleted?); making it again", bucket)
        await write_object(broker, await _store(broker, bucket), bucket, name, data, sha, chunk, shared=shared)


async def resolve(broker: "Broker", ref: BlobRef, what: str = "data") -> bytes:
    """The bytes ``ref`` names, after checking their size and SHA-256; :class:`BlobError` otherwise."""
    return bytes(await resolve_buffer(broker, ref, what))  # a copy: bodies and records are read as bytes


async def resolve_buffer(broker: "Broker", ref: BlobRef, what: str = "data") -> bytes | bytearray:
    """:func:`resolve` without its copy: the buffer the download wrote into, for bytes that go on as
    they are (a put value, to a job process or to be unpickled), so one copy is ever held."""
    where = f"{what} (object {ref.name!r} in object store {ref.bucket!r}, {ref.size:,} bytes)"
    recent = recent_get(ref.sha256)
    if recent is not None and len(recent) == ref.size:
        return recent  # stored by this process: its checksum was computed from these very bytes
    store = await _store(broker, ref.bucket)  # created if absent: the object is then reported missing
    async with _download_slot(broker):
        data = await _download(broker, store, ref, where)
    if await _sha256(data) != ref.sha256:
        raise BlobError(f"{where} is corrupted: its bytes do not match the reference's SHA-256 {ref.sha256[:16]}…")
    return data


def _download_slot(broker: "Broker") -> asyncio.Semaphore:
    """One of :data:`_DOWNLOADS` downloads at once per connection: a hundred 2 MB downloads started
    together (a sweep's big results landing at once) overran the connection's pending limit on the
    server, which dropped it as a slow consumer, and half of them failed."""
    slots = _download_slots.get(broker)
    if slots is None:
        slots = _download_slots[broker] = asyncio.Semaphore(_DOWNLOADS)
    return slots


async def _download(broker: "Broker", store: ObjectStore, ref: BlobRef, where: str) -> bytearray:
    """The object's chunks, read into one buffer of the size ``ref`` declares (:class:`ChunkSink`)."""
    try:
        info = await store.get_info(ref.name)
        size = info.size or 0
        if size != ref.size or size < 0:  # before a buffer of that size is made: a forged size may be huge
            raise BlobError(f"{where} is corrupted: the object holds {size:,} bytes, not the {ref.size:,} declared")
        if not info.nuid:
            raise BlobError(f"{where} is corrupted: its meta names no chunks")
        sink = ChunkSink(size)
        if size:
            await _watched(read_chunks(broker, ref.bucket, info.nuid, sink), sink, where)
    except NotFoundError:
        ttl = _ttls.get(broker, {}).get(ref.bucket)
        raise BlobError(
            f"{where} is missing: it was deleted, it expired{f' (the bucket keeps objects {ttl:g}s)' if ttl else ''}, "
            "or its upload never finished"
        ) from None
    if sink.got != size:  # replaced since its size was read, or chunks that do not add up to it
        raise BlobError(f"{where} is corrupted: it sent {sink.got:,} bytes, not the {size:,} declared")
    return sink.take()


async def _watched(download: Awaitable[Any], sink: ChunkSink, where: str) -> None:
    """Await ``download`` (into ``sink``); a :class:`BlobError` once no chunk has come for :data:`_STALL` s.
    Given up (stalled, or this call cancelled), the download is cancelled and its end awaited: its
    subscription is gone when this returns."""
    task = asyncio.ensure_future(download)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_STALL)
            if not task.done() and time.monotonic() - sink.last > _STALL:
                raise BlobError(f"{where} is unreadable: no chunk arrived for {_STALL:g}s (chunks lost?)")
        task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def delete(broker: "Broker", bucket: str, name: str) -> None:
    try:
        await (await _store(broker, bucket)).delete(name)
    except (NotFoundError, BucketNotFoundError, BlobError):
        pass  # gone already (deleted by another worker, or expired), or in no bucket of ours
    except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
        # Never worth failing a job over: the bucket's TTL removes what is left.
        log.warning("could not delete object %s from %s (the bucket TTL will): %s", name, bucket, exc)


def inline_limit(broker: "Broker") -> int:
    """Largest message (headers + body) sent as is; anything bigger goes to the object store."""
    return broker.max_payload - headroom(broker)


def headroom(broker: "Broker") -> int:
    """Bytes kept free under max_payload: a fixed KiB, but a sixteenth of a small one (a 1,500-byte
    server kept 476 bytes for a whole job, and refused a reference that fit)."""
    return min(_HEADROOM, broker.max_payload // 16)


# --- nq.put values --------------------------------------------------------------------------------
class ObjectRef:
    """A value stored once in the object store (``nq.put``). Pass it to jobs instead of the value:
    inside a job, wherever it appears (argument, nested, captured by a closure), it is the value."""

    __slots__ = ("bucket", "name", "size", "sha256")

    def __init__(self, bucket: str, name: str, size: int, sha256: str) -> None:
        self.bucket, self.name, self.size, self.sha256 = bucket, name, size, sha256

    def __reduce__(self) -> tuple:
        return (_object_value, (self.bucket, self.name, self.size, self.sha256))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and (other.bucket, other.sha256) == (self.bucket, self.sha256)

    def __hash__(self) -> int:
        return hash((self.bucket, self.sha256))

    def __repr__(self) -> str:
        return f"<ObjectRef {self.sha256[:12]} {self.size:,} bytes>"

    @property
    def blob(self) -> BlobRef:
        """The object-store reference (bucket, name, size, SHA-256) a job body carries for this value."""
        return BlobRef(self.bucket, self.name, self.size, self.sha256)


class _Scope:
    """The objects available while one job body is unpickled. ``placeholders``: a pass that only
    finds the refs (every one stays a ref, none is unpickled, even from the cache)."""

    def __init__(self, fetched: Mapping[str, bytes | bytearray] | None = None, placeholders: bool = False) -> None:
        self.fetched: Mapping[str, bytes | bytearray] = {} if fetched is None else fetched
        self.values: dict[str, Any] = {}
        self.missing: dict[str, ObjectRef] = {}
        self.placeholders = placeholders


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("naq_objects", default=None)


def _object_value(bucket: str, name: str, size: int, sha256: str) -> Any:
    """Unpickling an :class:`ObjectRef`: the value inside a job body being decoded, else the ref."""
    ref = ObjectRef(bucket, name, size, sha256)
    scope = _SCOPE.get()
    if scope is None:
        return ref
    if sha256 in scope.values:
        return scope.values[sha256]
    data = None if scope.placeholders else scope.fetched.get(sha256) or cache_get(sha256)
    if data is None:
        scope.missing[sha256] = ref
        return ref
    try:
        value = cloudpickle.loads(data)  # checked against the checksum carried in the (signed) body
    except Exception as exc:  # any unpickling failure of the stored value
        raise BlobError(f"nq.put object {name!r} cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    scope.values[sha256] = value
    return value


def refers_to_objects(body: bytes) -> bool:
    """True if a (pickled) job body holds :class:`ObjectRef` values (``nq.put``)."""
    return _object_value.__name__.encode() in body


async def decode_with_objects(broker: "Broker", decode: Callable[[], T], what: str = "job") -> T:
    """Run ``decode()`` (signature check + unpickling) with every :class:`ObjectRef` in the body
    replaced by its value, unpickled in this process (a worker's threads and async jobs)."""
    return decode_with_fetched(decode, await fetch_objects(broker, decode, what), what)


async def fetch_objects(broker: "Broker", decode: Callable[[], Any], what: str = "job") -> dict[str, bytes | bytearray]:
    """The pickled bytes of every :class:`ObjectRef` value the body ``decode()`` unpickles refers
    to, by SHA-256, for :func:`decode_with_fetched` (in a job process, or here). ``decode()``
    (signature check + unpickling) runs once with every ref left a placeholder, so no value is
    unpickled here, and nothing is fetched for a body whose signature does not verify."""
    scope = _Scope(placeholders=True)
    token = _SCOPE.set(scope)
    try:
        decode()
    except (BlobError, SignatureError):
        raise
    except SerializationError:
        # A placeholder may upset the object holding it: the real decode (with the values) decides.
        # Refs that pass would have reached after the failure are missing then (decode_with_fetched).
        if not scope.missing:
            raise
    finally:
        _SCOPE.reset(token)
    return {sha: await _fetch_value(broker, ref, what) for sha, ref in scope.missing.items()}


def decode_with_fetched(decode: Callable[[], T], fetched: Mapping[str, bytes | bytearray], what: str = "job") -> T:
    """Run ``decode()`` with every :class:`ObjectRef` in the body replaced by the value unpickled
    from its bytes in ``fetched`` (from :func:`fetch_objects`); no I/O, so a job process calls it.
    A ref whose bytes are not there is a :class:`BlobError` naming it."""
    scope = _Scope(fetched)
    token = _SCOPE.set(scope)
    try:
        result = decode()
    finally:
        _SCOPE.reset(token)
    if scope.missing:
        names = ", ".join(repr(ref.name) for ref in scope.missing.values())
        raise BlobError(f"nq.put objects of {what} could not be provided: {names}")
    return result


async def _fetch_value(broker: "Broker", ref: ObjectRef, what: str) -> bytes | bytearray:
    """A put value's bytes, downloaded once for the jobs that want it at the same time (four slots
    starting four jobs over one 150 MB value downloaded it four times at once: 2.3 GB), then cached."""

    async def download() -> bytes | bytearray:
        data = cache_get(ref.sha256) or await resolve_buffer(broker, ref.blob, f"nq.put object of {what}")
        cache_put(ref.sha256, data)
        return data

    return await _downloads.setdefault(broker, SingleFlight()).run(ref.sha256, download)


async def put_value(broker: "Broker", value: Any) -> ObjectRef:
    """Store ``value`` (pickled) once; an identical value already stored is not uploaded again."""
    if isinstance(value, ObjectRef):
        return value
    # Pickling and hashing 50 MB take a few hundred ms: off the loop, which serves every future.
    data, sha = await asyncio.get_running_loop().run_in_executor(None, pickle_value, value)
    return await put_bytes(broker, data, sha)


async def put_bytes(broker: "Broker", data: bytes, sha: str) -> ObjectRef:
    """Store pickled bytes under their checksum, unless an object of that name and size exists."""
    bucket = broker.layout.objects_bucket
    await _store(broker, bucket)  # (opened first: the TTL is the server's, _fit_stream)
    name = _put_name(sha, _bucket_ttl(broker, bucket))

    async def store_once() -> None:
        store = await _store(broker, bucket)
        try:
            info = await store.get_info(name)
            if info.size == len(data) and _same_digest(info.digest, sha):
                return
        except NotFoundError:
            pass  # (an object whose bytes were changed since is uploaded again: the put repairs it)
        await offload(broker, data, bucket, name, shared=True)  # (another process may put it too)

    # Puts of one value at once from this connection (threads, a batch's shared function): one upload.
    await _uploads.setdefault(broker, SingleFlight()).run(name, store_once)
    return ObjectRef(bucket, name, len(data), sha)


def _bucket_ttl(broker: "Broker", bucket: str) -> float:
    """The bucket's age limit as the server keeps it (once opened here), else this layout's."""
    return _ttls.get(broker, {}).get(bucket) or broker.layout.object_buckets()[bucket]


def _put_name(sha: str, ttl: float) -> str:
    """The object name for a value: its checksum and the half of the bucket's TTL it is put in.
    The same value put again within that half is the same object; put later, it is a new one, so
    a reference lives at least half the TTL from its put (reusing any object of that checksum gave
    out references about to expire). The older object stays for whoever still holds it."""
    return f"put.{sha}.{int(time.time() // (ttl / 2))}"  # (delete_value finds the older ones)


def _same_digest(digest: str | None, sha256_hex: str) -> bool:
    """Whether an object's stored digest (``SHA-256=<urlsafe base64>``) is that of ``sha256_hex``."""
    if not digest or "=" not in digest:
        return False
    stored = digest.split("=", 1)[1].rstrip("=")
    return stored == base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode().rstrip("=")


def pickle_value(value: Any, who: str = "nq.put()") -> tuple[bytes, str]:
    try:
        data = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
        raise SerializationError(f"{who}: cannot pickle the {type(value).__name__} value: {exc}") from exc
    return data, hashlib.sha256(data).hexdigest()


async def get_value(broker: "Broker", ref: ObjectRef) -> Any:
    """The value ``ref`` names (downloaded and checked)."""
    data = cache_get(ref.sha256) or await resolve_buffer(broker, ref.blob, "nq.put object")
    try:
        return cloudpickle.loads(data)
    except Exception as exc:  # any unpickling failure of the stored value
        raise BlobError(f"nq.put object {ref.name!r} cannot be unpickled: {type(exc).__name__}: {exc}") from exc


async def delete_value(broker: "Broker", ref: ObjectRef) -> None:
    """Delete the stored value (every reference to it stops working); unknown refs are ignored."""
    forget(ref.sha256)
    names = {ref.name}
    if ref.bucket in broker.layout.object_buckets() and ref.name.startswith("put."):
        await _store(broker, ref.bucket)  # (opened first: the TTL is the server's)
        # The same value put in an earlier half of the TTL is another object (_put_name) still alive,
        # as is one named before halves were (no suffix): every reference to the value stops working.
        now = int(time.time() // (_bucket_ttl(broker, ref.bucket) / 2))
        names |= {f"put.{ref.sha256}"} | {f"put.{ref.sha256}.{now - k}" for k in range(3)}
    for name in sorted(names):
        await delete(broker, ref.bucket, name)
