"""``nq.put(value)``: a big value stored once in the object store, passed to jobs by reference.

::

    ref = nq.put(df)                                   # uploads once; identical values are not re-uploaded
    sw = nq.sweep(lambda a: score(ref, a), a=range(200))   # each job sees the DataFrame where ``ref`` is
    nq.delete_object(ref)                              # or let it expire with NAQ_STATUS_TTL

Arguments, captured values and results over the server's max_payload go through
the object store by themselves; ``put`` is for a value shared by many jobs.
"""

from __future__ import annotations

from typing import Any

from ..core import blobs
from ..core.blobs import ObjectRef
from .client import Client
from .loop import run_async
from .twins import blocking

__all__ = ["ObjectRef", "put", "put_async", "get_object", "get_object_async", "delete_object", "delete_object_async"]


def _client(client: Client | None) -> Client:
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client must be a naq_nb Client or None, not {type(client).__name__}")
    if client is None:
        from .shared import default_client

        client = default_client()
    return client


def _check_ref(ref: Any, call: str) -> ObjectRef:
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"{call}(ref): ref must be an ObjectRef returned by nq.put(), not {type(ref).__name__}")
    return ref


# Each through the client's _ask: a connection that is down is waited for within JetStream's
# request bound and then named (NoAnswerError), and nothing is handed to nats-py's reconnect
# buffer to be stored after the call failed.
async def _put(client: Client, value: Any) -> ObjectRef:
    return await client._ask("storing an object", lambda b: blobs.put_value(b, value))


async def _get(client: Client, ref: ObjectRef) -> Any:
    return await client._ask(f"reading object {ref.name}", lambda b: blobs.get_value(b, ref))


async def _delete(client: Client, ref: ObjectRef) -> None:
    await client._ask(f"deleting object {ref.name}", lambda b: blobs.delete_value(b, ref))


async def put_async(value: Any, *, client: Client | None = None) -> ObjectRef:
    """Store ``value`` once (pickled, chunked, checksummed) and return a reference to pass to jobs.

    Inside a job the reference is the value, wherever it appears (an argument, inside a
    list or dict, captured by a closure). Stored values expire after ``NAQ_STATUS_TTL``
    unless deleted earlier with :func:`delete_object`; the same value put again reuses the
    stored object only while it has at least half of that left.
    """
    return await run_async(_put(_client(client), value))


put = blocking(put_async)


async def get_object_async(ref: ObjectRef, *, client: Client | None = None) -> Any:
    """The value ``ref`` names, downloaded (raises ``BlobError`` if it is gone or corrupted)."""
    return await run_async(_get(_client(client), _check_ref(ref, "get_object")))


get_object = blocking(get_object_async)


async def delete_object_async(ref: ObjectRef, *, client: Client | None = None) -> None:
    """Delete the stored value now. Jobs still holding ``ref`` then fail with a clear error, except on
    a worker that fetched it before and keeps its copy (same name, same bytes) for a while."""
    await run_async(_delete(_client(client), _check_ref(ref, "delete_object")))


delete_object = blocking(delete_object_async)
