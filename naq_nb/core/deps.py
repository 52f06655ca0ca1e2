"""Dependencies: a job runs only after every job it depends on has succeeded.

A delivered job with unmet dependencies is parked: it does not take a slot,
its message is kept alive with in-progress acks, and it wakes on the status
events of the jobs it waits for (one core subscription per awaited job id,
shared by every job parked on it). If a dependency fails or is cancelled the
dependent fails with a reason naming it. A worker that dies loses nothing: the
parked message is redelivered and parked again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable

from nats.js.errors import KeyNotFoundError

from .broker import Broker
from .delivery import Delivery
from .job import JobStatus
from .records import decode_status

__all__ = ["DependencyGate"]

_BAD = {JobStatus.FAILED.value: "failed", JobStatus.CANCELLED.value: "was cancelled"}


class DependencyGate:
    def __init__(self, broker: "Broker", on_ready: Callable[["Delivery"], None],
                 on_failed: Callable[["Delivery", str, str], Awaitable[None]]) -> None:
        self.b = broker
        self.on_ready = on_ready
        self.on_failed = on_failed
        self.parked: dict[str, tuple["Delivery", set[str]]] = {}  # job id -> (delivery, pending deps)
        self._waiters: dict[str, set[str]] = {}                   # dep id -> parked job ids
        self._subs: dict[str, object] = {}

    async def admit(self, d: "Delivery") -> None:
        """Run ``d`` now, fail it, or park it until its dependencies end."""
        deps = list(d.meta.options.depends_on)
        statuses = await asyncio.gather(*(self._status_of(dep) for dep in deps))
        pending = set()
        for dep, st in zip(deps, statuses):
            if st is None:
                await self.on_failed(d, dep, "does not exist (never enqueued, or expired)")
                return
            if st in _BAD:
                await self.on_failed(d, dep, _BAD[st])
                return
            if st != JobStatus.SUCCEEDED.value:
                pending.add(dep)
        if not pending:
            self.on_ready(d)
            return
        jid = d.meta.job_id
        self.parked[jid] = (d, pending)
        for dep in pending:
            self._waiters.setdefault(dep, set()).add(jid)
            if dep not in self._subs:
                subj = self.b.layout.kv_subject(self.b.layout.status_bucket, dep)
                self._subs[dep] = await self.b.nc.subscribe(subj, cb=self._on_event)
        # A dependency may have ended between the reads above and the subscriptions.
        for dep, st in zip(pending, await asyncio.gather(*(self._status_of(x) for x in pending))):
            await self._update(dep, st)

    async def _status_of(self, job_id: str) -> str | None:
        kv = await self.b.kv(self.b.layout.status_bucket)
        try:
            return decode_status((await kv.get(job_id)).value).get("status")
        except KeyNotFoundError:
            return None

    async def _on_event(self, msg) -> None:
        dep = msg.subject.rsplit(".", 1)[-1]
        try:
            st = json.loads(msg.data).get("status") if msg.data else None
        except ValueError:
            return
        await self._update(dep, st)

    async def _update(self, dep: str, st: str | None) -> None:
        if st != JobStatus.SUCCEEDED.value and st not in _BAD:
            return
        for jid in list(self._waiters.get(dep, ())):
            entry = self.parked.get(jid)
            if entry is None:
                continue
            d, pending = entry
            if st in _BAD:
                self._release(jid)
                await self.on_failed(d, dep, _BAD[st])
                continue
            pending.discard(dep)
            if not pending:
                self._release(jid)
                self.on_ready(d)
        await self._drop_sub_if_unused(dep)

    def _release(self, jid: str) -> None:
        d, pending = self.parked.pop(jid)
        for dep in d.meta.options.depends_on:
            self._waiters.get(dep, set()).discard(jid)

    def take(self, jid: str) -> "Delivery | None":
        """Remove a parked job (it was cancelled); returns its delivery."""
        if jid not in self.parked:
            return None
        d = self.parked[jid][0]
        self._release(jid)
        return d

    async def _drop_sub_if_unused(self, dep: str) -> None:
        if not self._waiters.get(dep):
            self._waiters.pop(dep, None)
            sub = self._subs.pop(dep, None)
            if sub is not None:
                await sub.unsubscribe()

    def deliveries(self) -> list["Delivery"]:
        return [d for d, _ in self.parked.values()]

    async def close(self) -> None:
        for sub in self._subs.values():
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs.clear()
