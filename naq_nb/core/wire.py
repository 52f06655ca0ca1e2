"""Publishing by writing the protocol commands ourselves: nats-py's outbound buffer, or the socket.

``nc.publish`` checks subject, reply and every header on each call (a regex, a
strip and a translate per header); naq_nb builds those valid itself (queue
names, job ids and inbox tokens are checked where they are made or read), so
:func:`send` writes the PUB / HPUB command and queues it on nats-py's buffer as
``nc.publish`` does. :func:`write_now` goes one step further for a caller's own
loop: the commands are written to the socket within the call, so they are on
their way even if the caller then blocks that loop. Whatever this can't write
(a blank in a subject, an odd header, an oversized payload, a connection not
up, a nats-py without these attributes) goes through ``nc.publish``.
:func:`drop_if_lost` clears that buffer before a close when the socket is gone.
"""

from __future__ import annotations

import asyncio
import re
import weakref

from nats.aio.client import Client as NATS

from .errors import PublishTimeoutError

__all__ = ["direct_ok", "send", "commands", "can_write_now", "until_writable", "write_now", "write_out", "drop_if_lost"]

# nats-py's outbound buffer, written to directly (its older or newer versions without these
# attributes get nc.publish instead).
_NC_BUFFER = (
    "_pending",
    "_pending_data_size",
    "_max_pending_size",
    "_flush_queue",
    "_flush_pending",
    "stats",
    "max_payload",
    "is_draining_pubs",
)
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token, as nats-py checks a key
_KEYS_SEEN: set[str] = set()  # keys checked already (naq_nb's are a handful of constants)
_BLANK = re.compile(r"\s")  # no subject or reply may hold one (it would split the protocol line)


def direct_ok(nc: NATS) -> bool:
    """This nats-py has the outbound buffer :func:`send` writes to."""
    return all(hasattr(nc, a) for a in _NC_BUFFER)


def _command(subject: str, reply: str, payload: bytes, headers: dict | None) -> bytes | None:
    """The PUB / HPUB protocol command, or None for a header key that is not a plain token or a
    value with a line break (nc.publish refuses or rewrites those)."""
    if not headers:
        return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, b"\r\n"))
    if not _KEYS_SEEN.issuperset(headers):
        if not all(isinstance(k, str) and _HEADER_KEY.fullmatch(k) for k in headers):
            return None  # nc.publish strips, drops or refuses such a key
        if len(_KEYS_SEEN) < 1024:
            _KEYS_SEEN.update(headers)
    text = "".join([f"{k}: {v.strip()}\r\n" for k, v in headers.items()])  # stripped, as nats-py does
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        return None
    hdr = b"NATS/1.0\r\n" + text.encode() + b"\r\n"
    return b"".join(
        (f"HPUB {subject} {reply} {len(hdr)} {len(hdr) + len(payload)}\r\n".encode(), hdr, payload, b"\r\n")
    )


def _one(nc: NATS, subject: str, payload: bytes, reply: str, headers: dict | None) -> bytes | None:
    if not subject or _BLANK.search(subject + reply) or len(payload) > nc.max_payload:
        return None
    return _command(subject, reply, payload, headers)


async def send(
    nc: NATS, direct: bool, subject: str, payload: bytes, reply: str, headers: dict | None, bound: float | None = None
) -> None:
    """``nc.publish(subject, payload, reply=reply, headers=headers)``, queued by hand when ``direct``
    (:func:`direct_ok`) and the command is one this module writes. With ``bound``, a buffer too full
    to take it must empty within ``bound`` seconds, else :class:`PublishTimeoutError` and nothing
    is queued (see :func:`_make_room`)."""
    cmd = _one(nc, subject, payload, reply, headers) if direct and nc.is_connected else None
    if bound is not None and direct and 0 < nc._max_pending_size < nc._pending_data_size + len(cmd or payload):
        await _make_room(nc, bound)
    if cmd is None or nc.is_draining_pubs:
        await nc.publish(subject, payload, reply=reply, headers=headers)
        return
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
    nc._pending.append(cmd)
    nc._pending_data_size += len(cmd)
    if 0 < nc._max_pending_size < nc._pending_data_size:
        await nc._flush_pending(force_flush=True)
    elif nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()  # wakes nats-py's flusher task, which writes the buffer


# A connection whose buffer did not empty in time, with the flush still under way (and the queue it
# was handed to: a reconnect starts a new flusher): later sends fail at once rather than each
# waiting out its bound behind it.
_STUCK: "weakref.WeakKeyDictionary[NATS, tuple[asyncio.Queue, asyncio.Future]]" = weakref.WeakKeyDictionary()


async def _make_room(nc: NATS, bound: float) -> None:
    """Wait until nats-py's flusher has written its buffer, at most ``bound`` seconds. Its own forced
    flush waits for ever (nats-py sets no flush timeout) when the server stops reading (a frozen
    process, a network that drops without a reset), and so would every enqueue behind it."""
    queue = nc._flush_queue
    if queue is None or not nc.is_connected:  # reconnecting: nats-py's own buffer limit applies
        return
    queue_then, stuck = _STUCK.get(nc, (None, None))
    if stuck is None or stuck.done() or queue_then is not queue:
        # The flusher resolves the future it takes from this queue once it has written the buffer.
        stuck = asyncio.get_running_loop().create_future()
        await queue.put(stuck)
        try:
            await asyncio.wait_for(asyncio.shield(stuck), bound)
            return
        except asyncio.TimeoutError:
            _STUCK[nc] = (queue, stuck)
    raise PublishTimeoutError(
        f"the server has not read the {nc._max_pending_size / 2**20:.0f} MiB already written to it within "
        f"{bound:g}s (frozen, or its network stalled); not sent"
    )


def commands(nc: NATS, direct: bool, msgs: list[tuple[str, bytes, str, dict | None]]) -> list[bytes] | None:
    """The commands of ``(subject, payload, reply, headers)`` publishes for :func:`write_now`, or None
    if any can't be written by hand, or this connection does not write within the call (only a TCP
    connection does: a websocket's writes go through a task)."""
    if not direct or type(getattr(nc, "_transport", None)).__name__ != "TcpTransport":
        return None
    cmds = []
    for subject, payload, reply, headers in msgs:
        cmd = _one(nc, subject, payload, reply, headers)
        if cmd is None:
            return None
        cmds.append(cmd)
    return cmds


def _socket_free(nc: NATS) -> bool:
    """Connected, not draining, and the socket's own buffer empty: bytes written now go out now."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    return (
        nc.is_connected
        and not nc.is_draining_pubs
        and writer is not None
        and not writer.transport.get_write_buffer_size()
    )


def can_write_now(nc: NATS) -> bool:
    """:func:`write_now` may be called: connected, and nothing queued ahead of it (in nats-py's buffer
    or the socket's), so order is kept and the write is not left waiting for the loop. Stays true
    until the connection's loop runs again."""
    return not nc._pending_data_size and _socket_free(nc)


async def until_writable(nc: NATS, bound: float) -> bool:
    """Wait (at most ``bound`` seconds) until :func:`can_write_now`, so a write made then keeps its
    place behind what was queued; a full socket is the server's back-pressure. False: still not."""
    if can_write_now(nc):
        return True
    loop = asyncio.get_running_loop()
    deadline, turns = loop.time() + bound, 0
    while nc.is_connected and loop.time() < deadline:
        # nats-py's flusher (and asyncio's writer) run at the loop's next turns; a full socket takes longer.
        await asyncio.sleep(0 if turns < 3 else 0.001)
        turns += 1
        if can_write_now(nc):
            return True
    return False


def write_now(nc: NATS, cmds: list[bytes]) -> None:
    """Write ``cmds`` (from :func:`commands`) to the socket in this call; check :func:`can_write_now`
    first. (The kernel takes them at once unless its buffer is full: then asyncio keeps the rest
    and writes it when the loop runs.)"""
    assert nc._transport is not None
    nc._transport.writelines(cmds)
    nc.stats["out_msgs"] += len(cmds)
    nc.stats["out_bytes"] += sum(len(c) for c in cmds)


def write_out(nc: NATS) -> bool:
    """Write what nats-py holds queued to the socket within this call, all of it and in order,
    rather than when its flusher task next gets the loop; False if nothing was written. Only over
    TCP, and only while the socket's own buffer is empty (the kernel takes the bytes now): a
    socket that is behind is left to the flusher, which waits for it to drain."""
    transport = getattr(nc, "_transport", None)
    if type(transport).__name__ != "TcpTransport" or not nc._pending_data_size or not _socket_free(nc):
        return False
    assert transport is not None
    transport.writelines(nc._pending)
    nc._pending = []  # a new list: nats-py's flusher copies, then replaces, the one it writes
    nc._pending_data_size = 0
    return True


def drop_if_lost(nc: NATS) -> None:
    """Before closing: forget what nats-py still holds to send if its socket is gone. Its close writes
    that into the closed socket, which asyncio's transport ignores but uvloop's refuses (RuntimeError),
    and the close would stop half-way."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is not None and writer.transport.is_closing() and hasattr(nc, "_pending"):
        nc._pending = []
        nc._pending_data_size = 0
