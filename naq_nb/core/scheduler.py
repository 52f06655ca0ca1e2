"""The scheduler service: fires due schedules onto their queues, one leader at a time.

Small named coroutines under one supervisor, like the worker:

* ``lease``: leader election through a KV lease (create-if-absent, then
  revision-checked renewal every ``ttl / 3``; the bucket's TTL frees the lease of a
  leader that died, and followers try to take it every second);
* ``watch``: a KV watch on the schedules bucket keeps an in-memory calendar (a
  heap of next due times) fresh, so a new or modified schedule wakes the timer;
* ``timer``: sleeps until the next due time (or a change), then :meth:`tick`;
* ``resync``: every :data:`RESYNC_EVERY` s and after a reconnect, checks that the schedules bucket is
  still the one loaded (:meth:`resync_once`): made again, or a server without its store, it reloads.

:meth:`tick` and :meth:`elect_once` are the one-iteration steps (``now`` from an injectable clock).
A fire publishes the job (``Nats-Msg-Id`` = its deterministic occurrence id) *before* the record
moves on: a leader that dies in between is repeated by the next one, and the copy is dropped (by
JetStream, or unsent once the status says a worker took it): no tick lost, none doubled.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import replace
from typing import Any, Awaitable, Callable

from nats.errors import NoRespondersError, TimeoutError as RequestTimeout
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue

from .broker import CONNECTION_ERRORS, Broker
from .errors import NaqConnectionError, ScheduleNotFoundError, SerializationError, SignatureError
from .job import JobStatus
from .kvscan import scan_bucket
from .schedules import (
    Schedule,
    job_message,
    load_schedule,
    occurrence_id,
    occurrences_due,
    publish_schedule_status,
    read_schedule,
)
from .deps import settle_dependents
from .fire_backoff import FireBackoff, FireError, record_failure
from .firing import publish_occurrence
from .settings import Settings
from .seen_revisions import SeenRevisions

__all__ = ["Scheduler"]

log = logging.getLogger("naq_nb.scheduler")

#: How often (seconds) the scheduler checks that its schedules bucket is the one it loaded.
RESYNC_EVERY = 10.0
#: Schedules one tick fires at most: a burst (thousands of delayed jobs due at once) goes out in
#: ticks of about a second each, and each tick checks the lease again (no firing long after it lapsed).
FIRES_PER_TICK = 500


class Scheduler:
    """Runs schedules. ``await Scheduler(...).run()`` until :meth:`request_stop`.

    ``ha=False`` skips the election (a single scheduler). ``clock`` returns epoch
    seconds; tests pass their own and call :meth:`tick` / :meth:`elect_once`.
    """

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        settings: Settings | None = None,
        broker: Broker | None = None,
        instance_id: str | None = None,
        ha: bool = True,
        clock: Callable[[], float] = time.time,
        **nats_options: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        if nats_url:
            self.settings = self.settings.with_(nats_url=nats_url)
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ha = ha
        self.clock = clock
        self.broker = broker
        self._own_broker = broker is None
        self._nats_options = nats_options
        self.lease_ttl: float | None = None  # the leader bucket's TTL, read once connected
        self.is_leader = not ha
        self._lease_rev = 0
        self._lease_until = float("inf") if not ha else 0.0
        self.schedules: dict[str, tuple[Schedule, bytes]] = {}
        self._seen_rev = SeenRevisions()
        self._heap: list[tuple[float, str, int]] = []
        self.backoff = FireBackoff()  # failing schedules' waits (their due times pushed back)
        self.fired = 0
        self.started: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._watcher: KeyValue.KeyWatcher | None = None
        self._watch_task: asyncio.Task | None = None
        self._bucket_created: object = None  # the schedules stream's creation time when loaded
        self._resync_lock: asyncio.Lock | None = None  # one reload at a time (made on the loop)
        self.max_sleep = 3600.0  # longest timer sleep between checks (naq's poll_interval lowers it)
        self.connection_lost = ""  # why it stopped on its own: its connection closed for good

    @property
    def _b(self) -> Broker:
        """The connection, once :meth:`prepare` has made (or been given) it."""
        if self.broker is None:
            raise RuntimeError("the scheduler is not connected yet: call start() or prepare() first")
        return self.broker

    # --- lifecycle -------------------------------------------------------------
    async def run(self) -> None:
        await self.start()
        assert self._stop is not None  # made by start()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()
        if self.connection_lost:
            raise NaqConnectionError(self.connection_lost)

    async def prepare(self) -> None:
        """Connect, load the calendar and try for the lease, without starting the loops (tests step from here)."""
        self._loop = asyncio.get_running_loop()
        self.started, self._changed, self._stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        if self.broker is None:
            options = {**self._nats_options, "closed_cb": self._closed_cb(self._nats_options.get("closed_cb"))}
            self.broker = await Broker.connect(settings=self.settings, **options)
        await self.broker.ensure_layout()
        if self.lease_ttl is None:
            self.lease_ttl = await self._bucket_ttl()
        await self._load()
        if self.ha:
            await self.elect_once(self.clock())

    async def start(self) -> None:
        await self.prepare()
        self._watch_task = asyncio.ensure_future(self._watch_loop())
        self._tasks = [self._watch_task, *map(asyncio.ensure_future, (self._timer_loop(), self._resync_loop()))]
        self._b.on_reconnect(self._after_reconnect)
        if self.ha:
            self._tasks.append(asyncio.ensure_future(self._lease_loop()))
        assert self.started is not None  # made by prepare()
        self.started.set()
        log.info(
            "scheduler %s started (%s, %d schedules)",
            self.instance_id,
            "leader" if self.is_leader else "follower",
            len(self.schedules),
        )

    def _closed_cb(self, user_cb: Callable[[], Awaitable[None]] | None) -> Callable[[], Awaitable[None]]:
        async def closed() -> None:
            # nats-py gave up (reconnects ran out, the server cut it): stop, not idle for ever firing
            # nothing, so a supervisor starts it again (`naq scheduler` exits 1).
            if self._stop is not None and not self._stop.is_set():
                self.connection_lost = (
                    f"scheduler {self.instance_id}: its NATS connection was closed for good; it stopped"
                )
                log.error("%s", self.connection_lost)
                self.request_stop()
            if user_cb is not None:
                await user_cb()

        return closed

    def request_stop(self, graceful: bool = True) -> None:
        """Ask the scheduler to stop; safe from signal handlers and other threads."""
        if self._loop is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:
            pass

    async def shutdown(self) -> None:
        if self.broker is not None:
            self.broker.off_reconnect(self._after_reconnect)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_watch()
        if self.ha and self.is_leader:
            await self._resign()
        if self._own_broker and self.broker is not None:
            await self.broker.close()
        log.info("scheduler %s stopped after %d fires", self.instance_id, self.fired)

    # --- the calendar -----------------------------------------------------------
    async def _load(self) -> None:
        # Watch first (nothing is missed), then read the current values with a scan: the
        # watch's own "initial values done" marker can come before them under load.
        kv = await self._b.kv(self._b.layout.schedules_bucket)
        created = await self._bucket_created_now()
        self._watcher = await kv.watchall()
        async for item in scan_bucket(self._b, self._b.layout.schedules_bucket):
            self._apply(item.key.split(".", 1)[-1], item.value, item.revision)
        self._bucket_created = created  # only once loaded: a reload that failed is tried again

    async def _stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            try:
                await watcher.stop()
            except CONNECTION_ERRORS as exc:  # closed connection: the watch is gone with it
                log.debug("stopping the schedules watch: %s", exc)

    async def resync_once(self) -> bool:
        """Reload the calendar if the schedules bucket is not the one loaded: deleted (it is made
        again) or a server back without its store. Its records start over at revision 1 there, and
        the old watch resumes past them, so without this new schedules would never fire. True if
        reloaded."""
        if self._resync_lock is None:
            self._resync_lock = asyncio.Lock()
        async with self._resync_lock:  # a reconnect's check and the loop's: one reload, one watch
            try:
                created = await self._bucket_created_now()
            except NotFoundError:  # deleted: made again once the deletion is over
                self._b.layout_lost()
                await self._b.ensure_layout()
                created = await self._bucket_created_now()
            if created == self._bucket_created:
                return False
            log.warning("scheduler %s: the schedules bucket was made again; reloading the calendar", self.instance_id)
            await self._reload()
            return True

    async def _bucket_created_now(self) -> object:
        lay = self._b.layout
        return (await self._b.js.stream_info(lay.kv_stream(lay.schedules_bucket))).created

    async def _reload(self) -> None:
        """Calendar and watch from the bucket as it is now. The watch task is restarted whatever
        happens (on the new watch, or none if it failed); a failed load leaves the bucket's creation
        time unrecorded, so the next check reloads again."""
        self._bucket_created = None
        await self._stop_watch()
        old = self._watch_task
        if old is not None:
            old.cancel()
        self.schedules.clear()
        self._seen_rev.clear()
        self._heap.clear()
        try:
            await self._load()
        finally:
            if old is not None:  # started: watch the new bucket
                self._tasks.remove(old)
                self._watch_task = asyncio.ensure_future(self._watch_loop())
                self._tasks.append(self._watch_task)
            if self._changed is not None:
                self._changed.set()

    async def _after_reconnect(self) -> None:
        self._retry_now()  # an outage failed every fire: none of them says anything about its schedule
        await self._resync_quietly()

    def _retry_now(self) -> None:
        """Forget every failing schedule's wait: each is due again at its own next run."""
        for sid in self.backoff.reset():
            if sid in self.schedules:
                self._push(self.schedules[sid][0])
        if self._changed is not None:
            self._changed.set()

    async def _resync_quietly(self) -> None:
        try:
            await self.resync_once()
        except Exception as exc:  # (a lost connection, the server's refusal) the loop checks again soon
            log.warning("checking the schedules bucket failed: %s", exc)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_EVERY)
            await self._resync_quietly()

    def _apply_entry(self, entry: Any) -> None:
        deleted = entry.operation is not None or not entry.value
        self._apply(entry.key.split(".", 1)[-1], None if deleted else entry.value, entry.revision)
        self._seen_rev.watched(entry.revision)

    def _apply(self, sid: str, value: bytes | None, revision: int) -> None:
        """Apply one record unless a newer one was seen (the watch replays what the scan read)."""
        if revision <= self._seen_rev.get(sid):
            return
        record = None if value is None else self._readable(sid, value, revision)
        if record is None:
            self._seen_rev.gone(sid, revision)
            self.backoff.forget(sid)
            self.schedules.pop(sid, None)  # deleted, or replaced by a record that cannot run
        else:
            self._seen_rev.seen(sid, revision)
            s, body = record
            self.schedules[sid] = (s, body)
            self._push(s)
        if self._changed is not None:
            self._changed.set()

    @staticmethod
    def _readable(sid: str, value: bytes, revision: int) -> tuple[Schedule, bytes] | None:
        """The record, or None (with a warning) if malformed: one bad record must not stop the others firing."""
        try:
            s, body = read_schedule(sid, value, revision)
            if s.next_run is not None and not math.isfinite(s.next_run):  # decodes (listings show it), never due
                raise SerializationError(f"schedule {sid!r}: next_run is {s.next_run!r}, not a time")
        except SerializationError as exc:
            log.warning("skipping schedule record s.%s: %s", sid, exc)
            return None
        return s, body

    def next_due(self) -> float | None:
        """The earliest due time among active schedules (stale heap entries dropped)."""
        while self._heap:
            due, sid, rev = self._heap[0]
            cur = self.schedules.get(sid)
            if cur is not None and cur[0].revision == rev and not cur[0].paused and self.backoff.due(cur[0]) == due:
                return due
            heapq.heappop(self._heap)
        return None

    async def _watch_loop(self) -> None:
        watcher = self._watcher
        if watcher is None:  # a reload that failed before its watch was made: the next check reloads
            return
        async for entry in watcher:
            if entry is not None:
                self._apply_entry(entry)

    async def _timer_loop(self) -> None:
        changed = self._changed
        assert changed is not None  # made by prepare(), before this loop starts
        while True:
            now = self.clock()
            leading = self.is_leader and now < self._lease_until
            # A follower waits for the lease (elect_once sets _changed), never on due times it may not fire.
            due = self.next_due() if leading else None
            if due is None or due > now:
                changed.clear()
                delay = None if due is None else min(due - now, self.max_sleep)
                if not leading and self.is_leader:
                    delay = 0.5  # leading on paper, lease lapsed locally: look again after the next renewal
                try:
                    await asyncio.wait_for(changed.wait(), delay)
                    continue  # the calendar or the lease changed: recompute the wait
                except asyncio.TimeoutError:
                    pass
            try:
                await self.tick(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a reconnect hiccup must not end the scheduler
                log.warning("tick failed: %s", exc)
                await self._restore_if_gone(exc)
                await asyncio.sleep(0.5)

    # --- one iteration ------------------------------------------------------------
    async def tick(self, now: float) -> list[str]:
        """Fire every schedule due at ``now`` (if leading); returns the job ids published."""
        if not self.is_leader or now >= self._lease_until:
            return []
        batch: list[tuple[float, str, int]] = []
        in_batch: set[str] = set()
        while len(batch) < FIRES_PER_TICK:
            due = self.next_due()
            if due is None or due > now:
                break
            item = heapq.heappop(self._heap)
            # One fire per schedule per tick: the heap may hold the same entry twice (our own update
            # applied from its watch echo and locally), and a second fire would repeat the occurrence.
            if item[1] not in in_batch:
                in_batch.add(item[1])
                batch.append(item)
        # Different schedules fire concurrently: a burst of due jobs costs one round trip, not one each.
        results = await asyncio.gather(
            *(self._fire(*self.schedules[sid], now) for _, sid, _ in batch), return_exceptions=True
        )
        fired: list[str] = []
        errors: list[BaseException] = []
        for item, res in zip(batch, results):
            if isinstance(res, BaseException):
                errors.append(self._not_fired(item, res, now))
            else:
                fired += res
        if errors:
            failed = [e for e in errors if isinstance(e, FireError)]
            if failed and self._b.is_connected:  # (an outage's failures are not the schedules')
                await asyncio.gather(*(self._record_failure(e) for e in failed))
            raise errors[0]
        return fired

    def _not_fired(self, item: tuple[float, str, int], exc: BaseException, now: float) -> BaseException:
        """``exc`` naming the schedule it stopped (a bare "maximum payload exceeded" twice a second
        says neither which schedule nor why), its cause kept for :meth:`_restore_if_gone`; the
        schedule due again once its wait (:class:`FireBackoff`) is over."""
        sid = item[1]
        held = self.schedules.get(sid)
        if not isinstance(exc, Exception) or held is None:
            heapq.heappush(self._heap, item)
            return exc
        wait = self.backoff.failed(sid, now)
        self._push(held[0])
        return FireError.of(held[0], len(held[1]), self._b.max_payload, exc, wait)

    async def _record_failure(self, err: FireError) -> None:
        held = self.schedules.get(err.schedule_id)
        if held is not None:
            new = await record_failure(self._b, held[0], held[1], err.why)
            if new is not None:
                self._apply_local(new, held[1])

    async def _fire(self, s: Schedule, body: bytes, now: float) -> list[str]:
        if self._b.settings.signing_keys:
            try:
                job_message(s, body, s.id, now, self._b.settings.signing_keys)
            except SignatureError as exc:  # forged or unsigned record: never fired, never retried
                log.error("schedule %s is not fired: %s", s.id, exc)
                self.schedules.pop(s.id, None)
                return []
        times, nxt = occurrences_due(s, now)
        ids = [occurrence_id(s, t) for t in times]
        for jid, t in zip(ids, times):
            await publish_occurrence(self._b, s, body, jid, t)
        fired = s.next_run
        for _ in range(5):
            try:
                new, finished = await self._advance(s, body, times, ids, nxt, now)
                break
            except KeyWrongLastSequenceError:
                # Changed meanwhile (a pause, a resume, a modify): the record counts this fire all the
                # same, or a resumed schedule would run once more than its repeat. A next run the change
                # moved (a resume past its due time, a new calendar) stands; cancelled, or another
                # leader's fire counted already: that stands, the watch brings it.
                fresh = await self._to_count_against(s, fired)
                if fresh is None:
                    log.info("schedule %s changed while firing; reloading", s.id)
                    return ids
                s, body, moved = fresh
                if moved and s.kind != "once":  # (a one-shot that fired is done, whatever it was moved to)
                    nxt = s.next_run
        else:
            log.warning("schedule %s kept changing while firing; its record may not count this fire", s.id)
            return ids
        if s.kind != "once":
            await publish_schedule_status(self._b, new, JobStatus.SUCCEEDED if finished else JobStatus.SCHEDULED)
            if finished:
                await settle_dependents(self._b, s.id, "finished")
        self.backoff.succeeded(s.id)
        self.fired += len(ids)
        return ids

    async def _advance(
        self, s: Schedule, body: bytes, times: list[float], ids: list[str], nxt: float | None, now: float
    ) -> tuple[Schedule, bool]:
        """Move record ``s`` past the occurrences fired (revision-checked); the new head and whether it
        ended (then it is deleted). :class:`KeyWrongLastSequenceError` if it changed meanwhile."""
        runs = s.runs + len(times)
        finished = nxt is None or (s.repeat is not None and runs >= s.repeat)
        new = replace(
            s,
            runs=runs,
            next_run=None if finished else nxt,
            last_run=now if times else s.last_run,
            last_job_id=ids[-1] if ids else s.last_job_id,
            failures=0,
            last_error=None,
        )
        kv = await self._b.kv(self._b.layout.schedules_bucket)
        key = self._b.layout.schedule_key(s.id)
        if finished:
            await kv.delete(key, last=s.revision)
            self.schedules.pop(s.id, None)
            self._seen_rev.gone(s.id, s.revision + 1)  # the delete marker; older replays are stale
        else:
            new.revision = await kv.update(key, new.encode(body), last=s.revision)
            self._apply_local(new, body)
        return new, finished

    async def _to_count_against(self, s: Schedule, fired: float | None) -> tuple[Schedule, bytes, bool] | None:
        """The record as stored now, if this fire (from record ``s``, due at ``fired``) is still to be
        counted in it, and whether a change moved its next run off ``fired`` (then that next run stands);
        None if it is gone or another fire was counted meanwhile."""
        try:
            fresh, body = await load_schedule(self._b, s.id)
        except (ScheduleNotFoundError, SerializationError):
            return None
        if (fresh.runs, fresh.last_job_id, fresh.created_at) != (s.runs, s.last_job_id, s.created_at):
            return None
        same = (fresh.kind, fresh.cron, fresh.interval, fresh.timezone) == (s.kind, s.cron, s.interval, s.timezone)
        return fresh, body, not (same and fresh.next_run == fired)

    def _apply_local(self, s: Schedule, body: bytes) -> None:
        if self._seen_rev.get(s.id) >= s.revision:
            return  # the watch delivered our own update (or a newer one) first: already in the calendar
        self._seen_rev.seen(s.id, s.revision)
        self.schedules[s.id] = (s, body)
        self._push(s)

    def _push(self, s: Schedule) -> None:
        """Put ``s`` in the calendar at its due time (later while its fires fail), unless paused or ended."""
        due = self.backoff.due(s)
        if due is not None and not s.paused:
            heapq.heappush(self._heap, (due, s.id, s.revision))

    # --- leadership ---------------------------------------------------------------
    async def elect_once(self, now: float) -> bool:
        """Take or renew the lease; returns whether this instance leads."""
        assert self.lease_ttl is not None  # read by prepare()
        kv = await self._b.kv(self._b.layout.leader_bucket)
        key = self._b.layout.leader_key
        me = self.instance_id.encode()
        try:
            if self.is_leader:
                self._lease_rev = await kv.update(key, me, last=self._lease_rev)
            else:
                self._lease_rev = await kv.create(key, me)
                log.info("scheduler %s is now the leader", self.instance_id)
            self.is_leader = True
            # Stop firing a little before another instance could take over.
            self._lease_until = now + self.lease_ttl * 0.8
            if self._changed is not None:
                self._changed.set()
        except KeyWrongLastSequenceError:
            if self.is_leader:
                log.warning("scheduler %s lost the lease", self.instance_id)
            self.is_leader = False
            self._lease_until = 0.0
        return self.is_leader

    async def _lease_loop(self) -> None:
        assert self.lease_ttl is not None  # read by prepare(), before this loop starts
        while True:
            await asyncio.sleep(self.lease_ttl / 3 if self.is_leader else 1.0)
            try:
                await self.elect_once(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease step failed: %s", exc)
                await self._restore_if_gone(exc)

    async def _restore_if_gone(self, exc: Exception) -> None:
        """After a write no stream took (the leader or status bucket, or the jobs stream, deleted by hand): the
        layout made again, or every step would fail for good (the schedules bucket is :meth:`resync_once`'s)."""
        cause = exc.__cause__ if isinstance(exc, FireError) else exc
        if not isinstance(cause, _STREAM_GONE) or not self._b.is_connected:  # (an outage's timeouts: not that)
            return
        log.warning("scheduler %s: a stream or bucket is gone (deleted?) or silent; checking them", self.instance_id)
        self._b.layout_lost()  # made again once the deletion is over (REMAKE_GRACE)
        try:
            await self._b.ensure_layout()
            self._retry_now()  # what no stream took may go now
        except Exception as again:  # (the server's refusal, a lost connection) the next failure tries again
            log.warning("making the layout again failed: %s", again)

    async def _bucket_ttl(self) -> float:
        """The lease lives as long as the leader bucket keeps an entry (its TTL may predate our settings)."""
        lay = self._b.layout
        try:
            info = await self._b.js.stream_info(lay.kv_stream(lay.leader_bucket))
            return float(info.config.max_age or lay.leader_ttl)
        except CONNECTION_ERRORS as exc:  # the configured TTL is the best guess; the next lease step asks again
            log.debug("leader bucket info: %s", exc)
            return lay.leader_ttl

    async def _resign(self) -> None:
        try:
            kv = await self._b.kv(self._b.layout.leader_bucket)
            await kv.delete(self._b.layout.leader_key, last=self._lease_rev)
        except CONNECTION_ERRORS as exc:  # a newer revision or a lost connection: the TTL frees it anyway
            log.debug("resigning the lease: %s", exc)
        self.is_leader = False

    def __repr__(self) -> str:
        role = "leader" if self.is_leader else "follower"
        return f"<Scheduler {self.instance_id} {role} schedules={len(self.schedules)}>"


# A deleted stream: nothing listens, no such stream, or no answer at all (nats-server 2.9's KV reads).
_STREAM_GONE = (NoRespondersError, NoStreamResponseError, NotFoundError, RequestTimeout)
