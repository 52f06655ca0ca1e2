"""A connection to NATS with the naq layout ensured on it.

:class:`Broker` owns one nats-py connection, its JetStream context and the KV
handles, all bound to the event loop it was created on. Streams and buckets are
created idempotently on first use; an existing stream whose config naq cannot
use raises :class:`LayoutConflictError` instead of drifting silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from .errors import LayoutConflictError, NaqConnectionError
from .layout import Layout
from .serialization import Serializer, get_serializer
from .settings import Settings

__all__ = ["Broker"]

log = logging.getLogger("naq_nb")


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class Broker:
    """Connection + layout. Create with ``await Broker.connect(...)``."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10.0)
        self.settings = settings
        self.layout = Layout(prefix=settings.prefix, replicas=settings.replicas, result_ttl=settings.result_ttl,
                             status_ttl=settings.status_ttl, worker_ttl=settings.worker_ttl,
                             ack_wait=settings.ack_wait, leader_ttl=settings.leader_ttl)
        self.serializer: Serializer = get_serializer(settings.serializer, settings.json_allowed)
        self._kv: dict[str, KeyValue] = {}
        self._ready: asyncio.Future | None = None
        self._consumers: set[str] = set()
        self._ack_sub: Any = None
        self._ack_prefix = ""
        self._ack_seq = 0
        self._acks: dict[str, asyncio.Future] = {}
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None, **nats_options: Any) -> "Broker":
        """Connect within ``settings.connect_timeout`` or raise :class:`NaqConnectionError`.

        ``nats_options`` go to :func:`nats.connect` unchanged (``user``, ``password``,
        ``token``, ``user_credentials``, ``tls``, ...).
        """
        settings = settings or Settings.from_env()
        if url:
            settings = settings.with_(nats_url=url)
        opts = {**dict(settings.nats_options), **nats_options}
        servers = [u.strip() for u in settings.nats_url.split(",") if u.strip()]
        timeout = settings.connect_timeout

        async def _quiet(_e: Exception) -> None:
            return None

        listeners: list[Callable[[], Awaitable[None]]] = []
        user_cb = opts.pop("reconnected_cb", None)

        async def _reconnected() -> None:
            # Core subscriptions come back by themselves, but what was published meanwhile is gone:
            # listeners re-read the state they wait on.
            for cb in ([user_cb] if user_cb else []) + list(listeners):
                try:
                    await cb()
                except Exception as exc:
                    log.warning("reconnect listener %r failed: %s", cb, exc)
        opts["reconnected_cb"] = _reconnected

        opts.setdefault("connect_timeout", min(2.0, timeout))
        opts.setdefault("max_reconnect_attempts", -1)
        opts.setdefault("reconnect_time_wait", 0.5)
        opts.setdefault("error_cb", _quiet)
        opts.setdefault("allow_reconnect", True)
        opts.setdefault("pending_size", 64 * 1024 * 1024)
        try:
            # A first connect that fails is not retried by nats-py unless asked; the
            # outer bound keeps a wrong URL from hanging a notebook cell.
            nc = await asyncio.wait_for(nats.connect(servers=servers, **opts), timeout)
        except (asyncio.TimeoutError, OSError, nats.errors.NoServersError, nats.errors.Error) as exc:
            raise NaqConnectionError(
                f"cannot connect to NATS at {', '.join(_redact(s) for s in servers)} within {timeout:g}s "
                f"({f'{type(exc).__name__}: {exc}' if str(exc) else 'no answer'}); is a nats-server running "
                "there? (in a notebook, nq.local() starts one with workers; in a terminal, `naq server`)") from None
        broker = cls(nc, settings)
        broker._reconnect_listeners = listeners
        return broker

    def on_reconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        """Call ``await cb()`` after each reconnection (to re-read what may have been missed)."""
        self._reconnect_listeners.append(cb)

    def off_reconnect(self, cb: Callable[[], Awaitable[None]]) -> None:
        try:
            self._reconnect_listeners.remove(cb)
        except ValueError:
            pass

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload or 1024 * 1024)

    async def ensure_layout(self) -> None:
        """Create (or check) streams and buckets once per broker."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._ensure())
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            if self._ready.done():
                self._ready = None
            raise

    async def _ensure(self) -> None:
        lay = self.layout
        for cfg in (lay.jobs_stream_config(), lay.failed_stream_config()):
            await self._ensure_stream(cfg)
        for name, kw in lay.buckets().items():
            self._kv[name] = await self._ensure_bucket(name, kw)

    async def _ensure_bucket(self, name: str, kw: dict) -> KeyValue:
        try:
            return await self.js.key_value(name)
        except BucketNotFoundError:
            pass
        try:
            return await self.js.create_key_value(bucket=name, history=kw["history"], ttl=kw["ttl"],
                                                  replicas=self.layout.replicas)
        except nats.js.errors.BadRequestError:
            return await self.js.key_value(name)  # another process created it first

    async def _ensure_stream(self, cfg: api.StreamConfig) -> None:
        try:
            info = await self.js.stream_info(cfg.name)
        except NotFoundError:
            try:
                await self.js.add_stream(cfg)
                return
            except nats.js.errors.BadRequestError:
                info = await self.js.stream_info(cfg.name)  # lost a creation race
        have = info.config
        problems = []
        if have.retention != cfg.retention:
            problems.append(f"retention is {have.retention} (naq needs {cfg.retention})")
        if set(have.subjects or []) != set(cfg.subjects or []):
            problems.append(f"subjects are {have.subjects} (naq needs {cfg.subjects})")
        if problems:
            raise LayoutConflictError(
                f"stream {cfg.name} exists with an incompatible config: {'; '.join(problems)}. "
                f"Delete it or set NAQ_PREFIX to use another layout.")

    async def publish_async(self, subject: str, payload: bytes, headers: dict | None = None) -> asyncio.Future:
        """Publish to JetStream without waiting; the returned future resolves to the PubAck or fails
        with the server's error. (nats-py's own ``publish_async`` leaves the future pending forever
        when the server answers with an error, e.g. a failed expected-sequence check.)"""
        if self._ack_sub is None:
            self._ack_prefix = self.nc.new_inbox()
            self._ack_sub = await self.nc.subscribe(f"{self._ack_prefix}.*", cb=self._on_pub_ack)
        self._ack_seq += 1
        token = str(self._ack_seq)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._acks[token] = fut
        fut.add_done_callback(lambda _f, t=token: self._acks.pop(t, None))
        await self.nc.publish(subject, payload, reply=f"{self._ack_prefix}.{token}", headers=headers)
        return fut

    async def _on_pub_ack(self, msg: Any) -> None:
        fut = self._acks.get(msg.subject.rsplit(".", 1)[-1])
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = json.loads(msg.data)
            if "error" in resp:
                nats.js.errors.APIError.from_error(resp["error"])  # raises the specific error class
                raise nats.js.errors.APIError(**resp["error"])
            fut.set_result(api.PubAck.from_response(resp))
        except Exception as exc:  # the server's error (or a garbled answer) goes to the waiter
            fut.set_exception(exc)

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

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 5.0)
            except Exception:
                await self.nc.close()

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    def __repr__(self) -> str:
        return f"<Broker {self.nc.connected_url.netloc if self.nc.connected_url else '-'} prefix={self.layout.prefix}>"
