"""One object written to an Object Store bucket, chunk by chunk, and taken back if the upload stops.

nats-py's ``ObjectStore.put`` writes the chunks under a subject it makes up, then the object's meta
message, which is what makes the object exist: until that is stored, a read finds no object, so a
half upload is never read as a whole one (and :func:`~naq_nb.core.blobs.resolve` checks size and
SHA-256 besides). But it cleans up after an ``Exception`` only: a cancel (Ctrl-C in a cell, a task
cancelled, a worker stopping) left every chunk written until the bucket's age limit, under a subject
nothing names. Here the chunk subject is chosen first, so whatever stops an upload, what it wrote
is deleted (:meth:`_Upload.take_back`, best effort, within :data:`TAKE_BACK_SECONDS`); and each
chunk's acknowledgement is a future awaited as is (nats-py's ``wait_for`` round each request lost
a cancel on Python 3.11, and the upload went on). The subjects and the meta message are nats-py's,
so ``ObjectStore.get`` reads such an object too; naq_nb reads it with :mod:`.download`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from nats.js import api
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)

from .aftercancel import cancel_unheard, run_to_end

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["write_object", "TAKE_BACK_SECONDS"]

log = logging.getLogger("naq_nb")

#: Seconds an interrupted or failed upload may spend deleting what it wrote.
TAKE_BACK_SECONDS = 10.0
_NO_MESSAGE = 10037  # JetStream's "no message found": the object has no meta message


async def write_object(
    broker: "Broker",
    store: ObjectStore,
    bucket: str,
    name: str,
    data: bytes,
    sha256: str,
    chunk: int,
    *,
    shared: bool = False,
) -> None:
    """Store ``data`` (whose SHA-256 is ``sha256``, hex) as object ``name`` of ``bucket`` in chunks of
    ``chunk`` bytes. Raises what the server or the connection raised (a missing bucket stream:
    ``NotFoundError`` or ``NoStreamResponseError``), or the cancel, after deleting what it wrote.
    ``shared``: the name is the content's (``nq.put``), so another process may write the same object
    and hand out references to it: once whole, it stays (see :meth:`_Upload.take_back`)."""
    old = await _current(broker, bucket, name)
    if cancel_unheard():
        raise asyncio.CancelledError("the upload was cancelled")
    replaces = old.nuid if old is not None and old.nuid and not old.deleted else ""
    up = _Upload(broker, bucket, name, shared=shared, replaces=replaces)
    try:
        for start in range(0, len(data), chunk):
            await up.send(data[start : start + chunk])
            if cancel_unheard():
                raise asyncio.CancelledError("the upload was cancelled")
        await up.send(up.meta_message(len(data), sha256, chunk), meta=True)
    except BaseException:
        await run_to_end(up.take_back(store), TAKE_BACK_SECONDS, f"deleting the chunks of object {name!r} of {bucket}")
        raise
    if up.replaces:
        # Stored over an object of the same name (nq.put repairing one): its chunks go, as nats-py's put did.
        await _purge(broker, bucket, up.replaces)


async def _current(broker: "Broker", bucket: str, name: str) -> api.ObjectInfo | None:
    """The object's meta as stored now (None: no such object). A missing bucket stream raises
    ``NotFoundError`` (nats-py's ``get_info`` reads that as "no object")."""
    try:
        msg = await broker.js.get_last_msg(OBJ_STREAM_TEMPLATE.format(bucket=bucket), _meta_subject(bucket, name))
    except NotFoundError as exc:
        if exc.err_code == _NO_MESSAGE:
            return None
        raise
    try:
        return api.ObjectInfo.from_response(json.loads(msg.data or b"{}"))
    except (ValueError, TypeError, KeyError):
        return None  # unreadable: written over like a missing one


def _meta_subject(bucket: str, name: str) -> str:
    return OBJ_META_PRE_TEMPLATE.format(bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode())


async def _purge(broker: "Broker", bucket: str, nuid: str) -> None:
    await broker.js.purge_stream(
        OBJ_STREAM_TEMPLATE.format(bucket=bucket), subject=OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
    )


class _Upload:
    """What one upload sent: its chunk subject, the acknowledgement in flight, whether its meta went;
    whether a whole object stays (``shared``), and the chunks of the meta it replaces (``replaces``)."""

    def __init__(self, broker: "Broker", bucket: str, name: str, *, shared: bool, replaces: str) -> None:
        self.b, self.bucket, self.name = broker, bucket, name
        self.shared, self.replaces = shared, replaces
        self.nuid = secrets.token_hex(11)  # (nats-py's are 22 characters too)
        self.chunks_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=self.nuid)
        self.chunks = 0
        self.sending = False  # a message may have been handed to the connection
        self.in_flight: asyncio.Future | None = None  # the last acknowledgement awaited
        self.meta_sent = False  # the meta message may have been
        self.meta_ack: asyncio.Future | None = None

    async def send(self, payload: bytes, *, meta: bool = False) -> None:
        """One chunk, or (``meta``) the meta message, sent and acknowledged."""
        if meta:
            subject, headers, what = _meta_subject(self.bucket, self.name), _ROLLUP, f"object {self.name!r}"
        else:
            subject, headers, what = self.chunks_subject, None, f"chunk {self.chunks + 1} of object {self.name!r}"
        # Marked first: a cancel inside the publish may land once the message is on its way.
        self.sending, self.meta_sent = True, meta
        fut = self.in_flight = await self.b.publish_async(subject, payload, headers, what=what)
        if meta:
            self.meta_ack = fut
        # Shielded: a cancel leaves the acknowledgement to come, so take_back knows what is stored.
        await asyncio.shield(fut)
        self.chunks += not meta

    def meta_message(self, size: int, sha256: str, chunk: int) -> bytes:
        """The meta message naming this upload's chunks (as nats-py's put writes it)."""
        info = api.ObjectInfo(
            name=self.name,
            bucket=self.bucket,
            nuid=self.nuid,
            size=size,
            chunks=self.chunks,
            mtime=datetime.now(timezone.utc).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode()),
            options=api.ObjectMetaOptions(max_chunk_size=chunk),
        )
        return json.dumps(info.as_dict()).encode()

    async def take_back(self, store: ObjectStore) -> None:
        """Delete what this upload wrote. The acknowledgement in flight is waited for first (within
        the publish timeout): a chunk stored after the purge would stay. Once its meta message may
        be stored, the object may be whole. If it is (the meta stored is this upload's), the chunks
        of the meta it replaced are nobody's and go; a ``shared`` object stays (another process that
        put the same value may have handed out references to that name), any other is deleted as
        ``nq.delete_object`` does (meta first, then chunks: an unsent job's body, a result not
        recorded), never its chunks alone, which would leave a meta naming chunks that are gone (a
        later ``nq.put`` of the value would take that for the stored value)."""
        if not self.sending:
            return
        if self.in_flight is not None:
            await asyncio.wait([self.in_flight])
        if self.meta_sent and not _refused(self.meta_ack):
            current = await _current(self.b, self.bucket, self.name)
            if current is not None and current.nuid == self.nuid:
                if self.replaces:
                    await _purge(self.b, self.bucket, self.replaces)
                if not self.shared:
                    await store.delete(self.name)
                return
            if self.meta_ack is None or self.meta_ack.cancelled() or self.meta_ack.exception() is not None:
                # Not acknowledged, not seen: it may still be stored, whole. Its chunks stay with it.
                log.warning(
                    "object %r of %s may be stored after all: left to the bucket's age limit", self.name, self.bucket
                )
                return
            # Stored, and since replaced by another upload's meta (or deleted): these chunks are nobody's.
        await _purge(self.b, self.bucket, self.nuid)
        log.info("an interrupted upload of object %r of %s: its chunks are deleted", self.name, self.bucket)


_ROLLUP = {api.Header.ROLLUP.value: MSG_ROLLUP_SUBJECT}  # a meta message replaces the object's previous one


def _refused(fut: asyncio.Future | None) -> bool:
    """The server answered the publish with an error: the message is not stored."""
    return fut is not None and fut.done() and not fut.cancelled() and isinstance(fut.exception(), APIError)
