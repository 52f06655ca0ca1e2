"""A connection to NATS with the naq layout ensured on it.

:class:`Broker` owns one nats-py connection, its JetStream context and the KV
handles, all bound to the event loop it was created on. Streams and buckets are
created idempotently on first use; an existing stream whose config naq cannot
use raises :class:`LayoutConflictError` instead of drifting silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any, Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from .drift import note_drift
from .errors import LayoutConflictError, NaqConnectionError, PublishTimeoutError
from . import wire
from .layout import Layout, create_only as _create_only
from .connecting import connect_failure, connect_unless_refused, fail_pending_on_loss, is_refusal
from .makestores import create_store, created_elsewhere
from .pubacks import PubAcks
from .serialization import Serializer, get_serializer
from .settings import Settings, redact_url

__all__ = ["Broker", "CONNECTION_ERRORS", "create_store", "quiet_futures"]

#: What a lost, closing or slow connection raises (nats-py's errors, ours, socket errors and timeouts):
#: the one tuple to catch where a best-effort step (cleanup, a retried background step) may meet one.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    NaqConnectionError,
    OSError,
    asyncio.TimeoutError,
)


_JS_CALL_ERRORS: tuple[type[BaseException], ...] = (nats.js.errors.APIError, *CONNECTION_ERRORS)


# After a stream was found deleted, the layout is made again no sooner than this: nats-server
# removes a deleted stream's files after it answers the delete, and a stream made again by that
# name meanwhile can lose its folder and store nothing ("critical write error").
REMAKE_GRACE = 0.5
#: Seconds a JetStream API request waits for its answer (nats-py's default is 5 s; a busy server needs more).
REQUEST_TIMEOUT = 10.0


def server_has_fast_batches(broker: "Broker") -> bool:
    """True when the server takes fast-ingest batches (nats-server 2.14+, ``allow_batched``)."""
    v = broker.nc.connected_server_version
    return (v.major, v.minor) >= (2, 14)


log = logging.getLogger("naq_nb")


class Broker:
    """Connection + layout. Create with ``await Broker.connect(...)``."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        #: Seconds a JetStream API request (a KV read, a stream lookup) waits for its answer.
        self.request_timeout = REQUEST_TIMEOUT
        self.js: JetStreamContext = nc.jetstream(timeout=self.request_timeout)
        self.settings = settings
        self.layout = Layout(
            prefix=settings.prefix,
            replicas=settings.replicas,
            result_ttl=settings.result_ttl,
            status_ttl=settings.status_ttl,
            worker_ttl=settings.worker_ttl,
            ack_wait=settings.ack_wait,
            leader_ttl=settings.leader_ttl,
        )
        self.serializer: Serializer = get_serializer(settings.serializer, settings.json_allowed)
        self._kv: dict[str, KeyValue] = {}
        #: Buckets whose stream answers direct gets (see :func:`~naq_nb.core.kvscan.read_keys`).
        self.direct_buckets: set[str] = set()
        self.fast_batches = False  # the jobs stream and the status bucket take fast-ingest batches
        self._configs: dict[str, api.StreamConfig] = {}  # stream configs read by the layout check
        self._ready: asyncio.Future | None = None
        self._stale: asyncio.Future | None = None  # an attempt forgotten while it ran: its checks may predate a loss
        self._consumers: set[str] = set()
        self.acks = PubAcks(nc)  # the acknowledgements of publishes, this connection's and others'
        self.open_batches: set[Any] = set()  # fast-ingest batches under way (FastBatch), told of a lost connection
        self.ack_copies = False  # publish_async may copy acknowledgements to a client (enable_ack_copies)
        self.acks.on_no_stream = self.layout_lost
        self._remake_after = 0.0  # loop time before which _ensure waits (see REMAKE_GRACE)
        #: Seconds a JetStream publish may wait for its acknowledgement before it fails.
        self.publish_timeout: float = settings.publish_timeout
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self._direct = wire.direct_ok(nc)  # send() may write to nats-py's outbound buffer
        #: Why the server refused this connection's last reconnect (credentials, certificate); None
        #: while connected or merely unreachable. Calls waiting on an outage name it (client.outage).
        self.refusal: BaseException | None = None

    @classmethod
    async def connect(
        cls, url: str | None = None, *, settings: Settings | None = None, **nats_options: Any
    ) -> "Broker":
        """Connect within ``settings.connect_timeout`` or raise :class:`NaqConnectionError`.

        ``nats_options`` go to :func:`nats.connect` unchanged (``user``, ``password``,
        ``token``, ``user_credentials``, ``tls``, ...).
        """
        settings = settings or Settings.from_env()
        if url:
            settings = settings.with_(nats_url=url)
        opts = {**settings.connect_options(), **nats_options}
        servers = settings.servers
        timeout = settings.connect_timeout

        seen: list[BaseException] = []  # errors of the first connect, to say *why* it failed

        refused = asyncio.Event()  # a refused login or certificate will not get better by retrying

        async def _quiet(e: Exception) -> None:
            if len(seen) < 16:
                seen.append(e)
            if is_refusal(e):
                refused.set()
                if holder:  # a reconnect refused: nats-py retries it for ever, and says nothing
                    holder[0].note_refusal(e)

        listeners: list[Callable[[], Awaitable[None]]] = []
        user_cb = opts.pop("reconnected_cb", None)

        async def _reconnected() -> None:
            # Core subscriptions come back by themselves, but what was published meanwhile is gone:
            # listeners re-read the state they wait on. The server may have come back without its
            # store (a container without a volume): the layout is checked again on the next call.
            if holder:
                holder[0].forget_layout()
                holder[0].refusal = None
            for cb in ([user_cb] if user_cb else []) + list(listeners):
                try:
                    await cb()
                except Exception as exc:
                    log.warning("reconnect listener %r failed: %s", cb, exc)

        opts["reconnected_cb"] = _reconnected
        holder: list[Broker] = []
        fail_pending_on_loss(opts, holder)
        opts.setdefault("connect_timeout", min(2.0, timeout))
        opts.setdefault("max_reconnect_attempts", -1)
        opts.setdefault("reconnect_time_wait", 0.5)
        opts.setdefault("error_cb", _quiet)
        opts.setdefault("allow_reconnect", True)
        opts.setdefault("pending_size", 64 * 1024 * 1024)
        try:
            # A first connect that fails is not retried by nats-py unless asked; the
            # outer bound keeps a wrong URL from hanging a notebook cell.
            nc = await connect_unless_refused(nats.connect(servers=servers, **opts), refused, timeout)
        except (asyncio.TimeoutError, OSError, nats.errors.NoServersError, nats.errors.Error) as exc:
            raise NaqConnectionError(connect_failure(servers, timeout, exc, seen)) from None
        broker = cls(nc, settings)
        holder.append(broker)
        broker._reconnect_listeners = listeners
        return broker

    def note_refusal(self, e: BaseException) -> None:
        """The server refused a reconnect: nats-py tries again for ever (the server may be given the
        old credentials back), so nothing fails by itself; say so once per outage, where a worker's
        operator looks, instead of idling in silence."""
        if self.refusal is None:
            where = ", ".join(redact_url(s) for s in self.settings.servers)  # (repr names no server while down)
            log.warning(
                "NATS at %s refuses this connection since it was lost (%s): check its credentials "
                "or certificates; retrying",
                where,
                e,
            )
        self.refusal = e

    def on_reconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        """Call ``await cb()`` after each reconnection (to re-read what may have been missed)."""
        self._reconnect_listeners.append(cb)

    def on_close(self, cb: Callable[[], Awaitable[None]]) -> None:
        """Call ``await cb()`` when this broker closes, before the connection drains (e.g. to
        unsubscribe a JetStream push subscription, whose helper tasks outlive a bare close)."""
        self._close_hooks.append(cb)

    def off_reconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        try:
            self._reconnect_listeners.remove(cb)
        except ValueError:
            pass

    def off_close(self, cb: Callable[[], Awaitable[None]]) -> None:
        try:
            self._close_hooks.remove(cb)
        except ValueError:
            pass

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload or 1024 * 1024)

    async def ensure_layout(self) -> None:
        """Create (or check) streams and buckets once per broker; :class:`NaqConnectionError` naming
        the cause when the server has no JetStream or does not answer its API. An attempt forgotten
        while it ran (a reconnect, a lost stream: its checks may predate the loss) is made again,
        a few times at most: a flood of losses must not keep a caller here. Ready: returns at once."""
        if self.layout_ready:
            return
        for _ in range(3):
            ready = await self._ensure_once()
            if self._stale is not ready:
                return
            self._stale = None
            if self._ready is ready:
                self._ready = None

    async def _ensure_once(self) -> asyncio.Future:
        ready = self._ready
        if ready is None:
            ready = self._ready = asyncio.ensure_future(self._ensure())
        try:
            await asyncio.shield(ready)
        except BaseException as exc:
            # Every waiter of a failed attempt gets here; the first clears it, the next call tries again.
            if ready.done() and self._ready is ready:
                self._ready = None
            if isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError)):
                raise NaqConnectionError(
                    f"the server at {self!r} does not answer JetStream requests: JetStream is not enabled "
                    "(start nats-server with -js, or a jetstream block in its config)"
                ) from None
            if isinstance(exc, nats.errors.TimeoutError):
                raise NaqConnectionError(
                    f"the server at {self!r} did not answer a JetStream request while naq_nb set up its "
                    "streams and buckets (down, restarting or overloaded?); try again"
                ) from exc
            raise
        return ready

    def forget_layout(self) -> None:
        """Check (and make) streams, buckets and consumers again on the next :meth:`ensure_layout`:
        after a reconnect, or a publish no stream took (deleted by hand, or a server that restarted
        without its store), so the next call finds them instead of failing for good."""
        ready = self._ready
        if ready is not None and ready.done():
            self._ready = None
        elif ready is not None:
            self._stale = ready
        self._consumers.clear()

    def layout_lost(self) -> None:
        """A stream or consumer was found deleted (a publish no stream took, a pull with no
        consumer): :meth:`forget_layout`, and the next :meth:`ensure_layout` makes it again only
        :data:`REMAKE_GRACE` seconds from now, once the server has finished deleting."""
        self.forget_layout()
        with contextlib.suppress(RuntimeError):  # (no running loop: nothing to delay)
            self._remake_after = asyncio.get_running_loop().time() + REMAKE_GRACE

    @property
    def layout_ready(self) -> bool:
        """True once :meth:`ensure_layout` has succeeded on this broker."""
        r = self._ready
        return r is not None and r.done() and not r.cancelled() and r.exception() is None and r is not self._stale

    async def _ensure(self) -> None:
        wait = self._remake_after - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        lay = self.layout
        for cfg in (lay.jobs_stream_config(), lay.failed_stream_config(), lay.waiting_stream_config()):
            await self._ensure_stream(cfg)
        for name, kw in lay.buckets().items():
            self._kv[name] = await self._ensure_bucket(name, kw)
        if server_has_fast_batches(self):
            self.fast_batches = await self._allow_batched(lay.fast_batch_streams())
        self._configs.clear()  # read for the checks above only

    async def _allow_batched(self, streams: list[str]) -> bool:  # (fastbatch.py publishes the batches)
        """Let ``streams`` take fast-ingest batches (editable in place); False if one cannot."""
        if "allow_batched" not in getattr(api.StreamConfig, "__dataclass_fields__", {}):
            return False  # a nats-py before 2.13 does not carry the setting
        for name in streams:
            try:
                cfg = self._configs.get(name) or (await self.js.stream_info(name)).config
                if not cfg.allow_batched:
                    cfg = (await self.js.update_stream(cfg.evolve(allow_batched=True))).config
            except _JS_CALL_ERRORS as exc:  # e.g. no permission to edit streams
                log.warning("stream %s: cannot allow batched publishes (%s); jobs are sent one by one", name, exc)
                return False
            if not cfg.allow_batched:  # a server (or cluster leader) that ignores the setting
                return False
        return True

    async def _ensure_bucket(self, name: str, kw: dict) -> KeyValue:
        stream = self.layout.kv_stream(name)
        try:
            cfg = (await self.js.stream_info(stream)).config
        except NotFoundError:
            try:
                kv = await create_store(
                    f"bucket {name}",
                    lambda: self.js.create_key_value(bucket=name, replicas=self.layout.replicas, **kw),
                )
            except nats.js.errors.BadRequestError:  # another process created it first
                cfg = (await created_elsewhere(lambda: self.js.stream_info(stream))).config
            else:
                if kw["direct"]:
                    self.direct_buckets.add(name)
                return kv
        if (cfg.max_msgs_per_subject or 0) < 1:
            raise LayoutConflictError(f"stream {stream} exists but is no KV bucket; delete it or set NAQ_PREFIX")
        note_drift(self, stream, cfg)
        if kw["direct"] and not cfg.allow_direct:
            cfg = await self._allow_direct(cfg)
        if cfg.allow_direct:
            self.direct_buckets.add(name)
        self._configs[stream] = cfg
        # What js.key_value() builds, without reading the stream's info a second time.
        return KeyValue(
            name=name, stream=stream, pre=self.layout.kv_subject(name, ""), js=self.js, direct=bool(cfg.allow_direct)
        )

    async def _allow_direct(self, cfg: api.StreamConfig) -> api.StreamConfig:
        """A bucket made by an earlier naq_nb answers direct gets from now on (editable in place)."""
        try:
            return (await self.js.update_stream(cfg.evolve(allow_direct=True))).config
        except nats.js.errors.APIError as exc:  # e.g. no permission to edit streams: plain gets still work
            log.warning("bucket stream %s: cannot allow direct gets (%s); it is read key by key", cfg.name, exc)
            return cfg

    async def _ensure_stream(self, cfg: api.StreamConfig) -> None:
        assert cfg.name is not None  # layout.py names every stream
        try:
            info = await self.js.stream_info(cfg.name)
        except NotFoundError:
            try:
                self._configs[cfg.name] = (
                    await create_store(f"stream {cfg.name}", lambda: self.js.add_stream(cfg))
                ).config
                return
            except nats.js.errors.BadRequestError:
                name = cfg.name
                info = await created_elsewhere(lambda: self.js.stream_info(name))  # lost a creation race
        have = self._configs[cfg.name] = info.config
        note_drift(self, cfg.name, have)
        problems = []
        if have.retention != cfg.retention:
            problems.append(f"retention is {have.retention} (naq needs {cfg.retention})")
        if set(have.subjects or []) != set(cfg.subjects or []):
            problems.append(f"subjects are {have.subjects} (naq needs {cfg.subjects})")
        if problems:
            raise LayoutConflictError(
                f"stream {cfg.name} exists with an incompatible config: {'; '.join(problems)}. "
                f"Delete it or set NAQ_PREFIX to use another layout."
            )

    async def send(self, subject: str, payload: bytes, reply: str = "", headers: dict | None = None) -> None:
        """``nc.publish``, cheaper: naq_nb's own subjects and headers are written by hand (:mod:`.wire`)."""
        await wire.send(self.nc, self._direct, subject, payload, reply, headers, self.publish_timeout)

    async def publish_async(
        self,
        subject: str,
        payload: bytes,
        headers: dict | None = None,
        *,
        timeout: float | None = None,
        what: str | None = None,
        ack_copy: tuple[str, str, str, str] | None = None,
    ) -> asyncio.Future:
        """Publish to JetStream without waiting; the returned future resolves to the PubAck or fails.

        It fails with the server's error (nats-py's own ``publish_async`` leaves its future pending
        forever then, e.g. on a failed expected-sequence check), with :class:`PublishTimeoutError`
        when no acknowledgement comes within ``timeout`` (default :attr:`publish_timeout`), and with
        :class:`NaqConnectionError` when the connection drops or closes first: the message may or may
        not be stored then, so a caller that retries relies on its ``Nats-Msg-Id``.
        ``ack_copy`` ``(client token, job id, kind, run)``: the acknowledgement reaches that client too
        (:meth:`.Layout.early_ack_head`).
        """
        if self.nc.is_closed:
            raise NaqConnectionError(f"cannot publish {what or subject}: the connection is closed")
        bound = self.publish_timeout if timeout is None else timeout
        label = what or f"a message on {subject}"
        head = None
        if ack_copy is not None:
            if not self.ack_copies:
                raise RuntimeError("ack_copy needs enable_ack_copies() to have succeeded")
            token, job_id, kind, run = ack_copy
            head = self.layout.early_ack_head(token, job_id, kind, self.acks.id, run)
        reply, fut = await self.acks.reply(label, bound, head)
        try:
            await self.send(subject, payload, reply, headers)
        except PublishTimeoutError:
            self.acks.drop(reply)
            fut.cancel()
            raise
        except (nats.errors.Error, OSError) as exc:
            self.acks.drop(reply)
            fut.cancel()
            raise NaqConnectionError(f"cannot publish {label}: {type(exc).__name__}: {exc}") from None
        return fut

    async def enable_ack_copies(self) -> bool:
        """Let :meth:`publish_async` copy acknowledgements to a job's client (``ack_copy``): True,
        and :attr:`ack_copies` set, once this connection takes messages on its pattern (within 2 s;
        an ACL may forbid it)."""
        pattern = self.layout.early_ack_pattern(self.acks.id)
        probe = self.layout.early_ack_head("probe", "probe", "s", self.acks.id, "0") + ".0"
        self.ack_copies = await self.acks.listen(pattern, probe, 2.0)
        return self.ack_copies

    def reserve_ack(self) -> tuple[str, str] | None:
        """From any thread: a reply for a publish made on another connection whose acknowledgement
        comes to this one (:meth:`PubAcks.reserve`)."""
        return self.acks.reserve()

    def expect_ack(self, token: str, label: str, on_ack: Callable[[asyncio.Future], None]) -> None:
        """From any thread: ``on_ack(fut)`` runs on this broker's loop when that acknowledgement comes,
        fails or is :attr:`publish_timeout` late (:meth:`PubAcks.expect`)."""
        self.acks.expect(token, label, self.publish_timeout, on_ack)

    def commands(self, msgs: list[tuple[str, bytes, str, dict | None]]) -> list[bytes] | None:
        """See :func:`.wire.commands`."""
        return wire.commands(self.nc, self._direct, msgs)

    def can_write_now(self) -> bool:
        return self._direct and wire.can_write_now(self.nc)

    async def until_writable(self, bound: float) -> bool:
        """:func:`.wire.until_writable`, False at once where this connection can't be written directly."""
        return self._direct and await wire.until_writable(self.nc, bound)

    def write_now(self, cmds: list[bytes]) -> None:
        """Write to the socket within this call (:func:`.wire.write_now`)."""
        wire.write_now(self.nc, cmds)

    def write_out(self) -> bool:
        """Write what :meth:`send` queued to the socket within this call (:func:`.wire.write_out`)."""
        return self._direct and wire.write_out(self.nc)

    async def publish_each(
        self, msgs: list[tuple[str, bytes, str]], *, create_only: bool = False
    ) -> list[BaseException]:
        """Publish ``(subject, payload, what)`` messages pipelined (each create-only if asked) and wait
        for every acknowledgement; the failures, in no order (a lost connection fails the rest)."""
        try:
            futs = [
                await self.publish_async(subject, payload, headers=_create_only() if create_only else None, what=what)
                for subject, payload, what in msgs
            ]
            outcomes = await asyncio.gather(*futs, return_exceptions=True)
        except _JS_CALL_ERRORS as exc:  # (a connection error, or a refusal raised at once)
            return [exc]
        return [e for e in outcomes if isinstance(e, BaseException)]

    def fail_pending(self, why: str) -> None:
        """Fail every publish still waiting for its acknowledgement (the connection dropped or closed),
        and end the wait of every fast-ingest batch under way: what it had not acknowledged is in doubt."""
        self.acks.fail_all(why)
        for batch in list(self.open_batches):
            batch.lose(why)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: dict | None = None,
        *,
        timeout: float | None = None,
        what: str | None = None,
    ) -> api.PubAck:
        """Publish to JetStream and wait for the acknowledgement, within the same bounds as
        :meth:`publish_async`."""
        return await (await self.publish_async(subject, payload, headers, timeout=timeout, what=what))

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            await self.ensure_layout()
        return self._kv[bucket]

    async def ensure_consumer(self, queue: str) -> str:
        """The durable pull consumer all workers of ``queue`` share."""
        name = self.layout.consumer_name(queue)
        if name not in self._consumers:
            await self.ensure_layout()
            cfg = self.layout.consumer_config(queue)
            try:
                await self.js.consumer_info(self.layout.jobs_stream, name)
            except NotFoundError:
                await self.js.add_consumer(self.layout.jobs_stream, cfg)
            self._consumers.add(name)
        return name

    async def close(self, drain: bool = True) -> None:
        """Close the connection, draining it first (``drain=False``: at once, e.g. on a loop that is
        shutting down, whose reading task is gone)."""
        hooks, self._close_hooks = self._close_hooks, []
        for cb in hooks:
            try:
                await cb()
            except Exception as exc:  # closing anyway; a hook's failure must not keep the connection open
                log.debug("close hook %r failed: %s", cb, exc)
        if drain and self.nc.is_connected:
            try:
                # A server that does not answer a ping is not drained: nats-py's drain, even when cancelled,
                # ends with a flush of its own that waits 10 s more for that server.
                await self.nc.flush(timeout=math.ceil(min(5.0, self.publish_timeout)))  # whole seconds (its type)
                await asyncio.wait_for(self.nc.drain(), 5.0)
            except Exception as exc:  # closed below instead
                log.debug("draining failed, closing: %r", exc)
        if not self.nc.is_closed:
            wire.drop_if_lost(self.nc)
            try:
                await self.nc.close()
            except (OSError, TypeError, RuntimeError) as exc:  # the socket was already gone (server killed)
                # (TypeError: Python 3.13.0's socket transport, when nats-py flushes into a closed one;
                # RuntimeError: uvloop's, if the socket was lost during the close itself)
                log.debug("closing a lost connection: %r", exc)
        self.fail_pending("closed")

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    async def until_connected(self, bound: float) -> bool:
        """Wait (at most ``bound`` seconds) for a lost connection to come back; False: it did not.
        A request made meanwhile would sit in nats-py's buffer for JetStream's whole timeout."""
        if self.nc.is_connected:
            return True
        back = asyncio.Event()

        async def _back() -> None:
            back.set()

        self.on_reconnect(_back)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(back.wait(), max(bound, 0.0))
        finally:
            self.off_reconnect(_back)
        return self.nc.is_connected

    def __repr__(self) -> str:
        url = self.nc.connected_url
        where = f"{url.hostname}:{url.port}" if url else "-"  # never netloc: it carries user:password@
        return f"<Broker {where} prefix={self.layout.prefix}>"


def _retrieve(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


def quiet_futures(*futs: asyncio.Future | None) -> None:
    """Mark the outcome of ``futs`` (e.g. :meth:`Broker.publish_async`'s) as seen, now or when they end,
    so a failure raised once through another future is not also logged by asyncio as "never retrieved"."""
    for f in futs:
        if f is not None:
            f.add_done_callback(_retrieve)
