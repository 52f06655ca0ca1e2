"""The worker: a supervisor over a few small named coroutines.

* ``feed``: a :class:`PullFeed` per queue keeps exactly as many pull requests
  outstanding as there are free slots plus a prefetch, so jobs are pushed to
  the worker the moment they are published;
* ``slot`` x concurrency: each takes ready jobs and runs them via :class:`JobRunner`;
* ``keepalive``: in-progress acks for every held message, so a long job is never
  redelivered while it runs and ``ack_wait`` can stay short;
* ``heartbeat``: the worker's record in the workers bucket;
* ``cancel watch``: a subscription that cancels running, parked or buffered jobs;
* a :class:`LoopWatchdog` thread: names a job that blocks the loop and keeps
  held messages alive meanwhile.

Sync job code runs per ``execution``: ``"processes"`` (default; a pool of
child processes, hard timeouts and cancels) or ``"threads"`` (see
:mod:`naq_nb.core.execution`).

Each loop has a one-iteration method taking ``now`` (``keepalive_once``,
``heartbeat_once``, ``pull_once``) so tests can step it with their own clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections import Counter, OrderedDict
from typing import Any, Awaitable, Callable, Iterable

import nats.errors
from nats.aio.subscription import Subscription

from .drift import held_ack_wait
from .broker import CONNECTION_ERRORS, Broker
from .connecting import check_connect_options
from .context import echo_line, install_capture, uninstall_capture
from .delivery import Delivery, ack_numbers, nak, parse_meta
from .deps import DependencyGate
from .errors import NaqConnectionError, SerializationError
from .execution import make_execution, validate_execution
from .layout import pull_api_subject
from .puller import PullFeed
from .registry import WorkerRecord, encode_heartbeat
from .runner import JobRunner
from .settings import Settings
from .stoponce import StopOnce
from .stopsignals import stop_twice_on_signals
from .watchdog import LoopWatchdog
from .worker_args import check_flag, check_sizes, queue_names, worker_name

__all__ = ["Worker"]

log = logging.getLogger("naq_nb.worker")

_INF = float("inf")
CHILD_START_WAIT = 30.0  # at most this long a starting worker waits for its job processes before pulling
RESTORE_EVERY = 2.0  # at most this often a worker whose consumer is gone makes the layout again


class Worker:
    """Runs jobs from one or more queues with ``concurrency`` slots.

    ``await worker.run()`` runs until :meth:`stop` (or :meth:`request_stop`, which
    is safe from signal handlers and other threads). Sync job functions run in
    ``concurrency`` child processes (``execution="processes"``, the default) or
    threads (``execution="threads"``: no hard timeout or cancel); async ones on
    the worker's loop. ``echo_output=True`` also writes each line a job prints
    to this process's stdout, prefixed with the job id (the CLI turns it on).
    """

    def __init__(
        self,
        queues: str | Iterable[str] | None = None,
        *,
        nats_url: str | None = None,
        concurrency: int = 10,
        name: str | None = None,
        broker: Broker | None = None,
        settings: Settings | None = None,
        prefetch: int | None = None,
        grace_period: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        capture_output: bool = True,
        execution: str = "processes",
        echo_output: bool = False,
        **nats_options: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        if nats_url:
            self.settings = self.settings.with_(nats_url=nats_url)
        self.queues = queue_names(queues, self.settings.default_queue)
        self.execution_mode = validate_execution(execution)
        check_sizes(concurrency, prefetch, grace_period, self.execution_mode)
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        self.grace_period = grace_period
        self.clock = clock
        self.capture_output = capture_output
        self.echo_output = check_flag("echo_output", echo_output)
        self.execution: Any = None  # made in start(): the process pool needs the broker's serializer
        self.watchdog: LoopWatchdog | None = None
        self.name = worker_name(name)
        self.worker_id = f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}".replace(".", "_")
        self.broker = broker
        self._own_broker = broker is None
        check_connect_options(nats_options, own=Worker)
        self._nats_options = nats_options
        self.stats: Counter = Counter()
        self.state = "created"
        self.started_at = time.time()
        self.cancelled_ids: "OrderedDict[str, None]" = OrderedDict()
        self.ready: asyncio.Queue[Delivery] | None = None
        self.running: dict[str, Delivery] = {}
        self._taken = 0  # jobs slots have taken (Delivery.taken)
        self._loops_end = False  # set by shutdown: the periodic loops end
        self._none_running: asyncio.Event | None = None  # set while no slot runs a job (graceful stop waits on it)
        self._feeds: dict[str, PullFeed] = {}
        self._restore_after = -_INF  # (clock time) when a lost consumer may next be made again
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._completion_slots: asyncio.Semaphore | None = None
        self._stop = StopOnce()  # asked, after a start under way, one shutdown
        self.connection_lost = ""  # why the worker stopped on its own: its connection closed for good
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_keepalive = self._last_heartbeat = 0.0
        self._cancel_sub: Subscription | None = None
        self.started: asyncio.Event | None = None  # created in start(), on the worker's loop

    # --- lifecycle -------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve until stopped, then shut down gracefully."""
        await self.start()
        assert self._stop.asked is not None  # made by start()
        try:
            await self._stop.asked.wait()
        finally:
            await self.shutdown(graceful=self._stop.graceful)
        if self.connection_lost:
            raise NaqConnectionError(self.connection_lost)

    async def start(self) -> None:
        """Connect and serve (it returns once serving). A stop asked meanwhile is carried out before it
        returns: with start() alone nothing else would, and the worker would serve on."""
        async with self._stop.starting():
            await self._start()
        if self._stop.asked_yet():
            await self.shutdown(self._stop.graceful)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.ready = asyncio.Queue()
        self._none_running = asyncio.Event()
        self._none_running.set()
        self._completion_slots = asyncio.Semaphore(1024)
        if self.broker is None:
            options = {**self._nats_options, "closed_cb": self._closed_cb(self._nats_options.get("closed_cb"))}
            self.broker = await Broker.connect(settings=self.settings, reconnected_cb=self._on_reconnect, **options)
        b = self.broker
        # Children start while the layout and consumers are set up; no job is pulled before they are up.
        self.execution = make_execution(self.execution_mode, self.concurrency, b.serializer, self.settings)
        self.execution.start()
        try:
            await self._set_up(b)
        except BaseException:
            await self.execution.close()  # a failed start leaves no job process behind
            if hasattr(self, "gate"):
                await self.gate.close()
            raise
        self.state = "idle"
        if self.capture_output:
            install_capture()  # a job's prints go to its own log, not the worker's console
        await self.heartbeat_once(self.clock())
        self._tasks = [asyncio.ensure_future(self._slot(i)) for i in range(self.concurrency)]
        self._tasks += [
            asyncio.ensure_future(self._every(self.settings.heartbeat_interval, self.heartbeat_once)),
            asyncio.ensure_future(self._every(max(0.5, self.ack_wait / 4), self.keepalive_once)),
            asyncio.ensure_future(self._every(1.0, self.pull_once)),
        ]
        await self.pull_once(self.clock())
        self.watchdog = LoopWatchdog(
            self._loop,
            self._held,
            self._watchdog_broker,
            ack_wait=self.ack_wait,
            name=f"naq-watchdog-{self.worker_id}",
        )
        self.watchdog.start()
        self.started.set()
        log.info("worker %s serving %s with %d slots", self.worker_id, self.queues, self.concurrency)
        pool = getattr(self.execution, "pool", None)
        log.debug(
            "worker %s: %s execution, prefetch %d, job processes %s, loop %s",
            self.worker_id,
            self.execution_mode,
            self.prefetch,
            pool.pids if pool is not None else "none",
            type(self._loop).__module__,
        )

    async def _set_up(self, b: Broker) -> None:
        """Layout, runner, dependency gate, cancel watch, job processes up, then the pull feeds."""
        await b.ensure_layout()
        self.runner = JobRunner(
            b,
            self.worker_id,
            self.execution,
            self.stats,
            complete=self.complete_in_background,
            cancelled=self.cancelled_ids,
            on_line=echo_line if self.echo_output else None,
            live_after=3 * self.settings.heartbeat_interval,
            alone=self._alone,
        )
        run = self.runner
        self.gate = DependencyGate(b, self._enqueue_ready, run.fail_dependency, on_refused=run.dead.reject)
        await self.gate.start()
        self.runner.dependents = self.gate
        self._cancel_sub = await b.nc.subscribe(b.layout.cancel_subject, cb=self._on_cancel)
        b.acks.on_no_stream = self._layout_lost
        if not await b.enable_ack_copies():
            log.info(
                "worker %s: results are pushed after their writes only (no messages on %s)",
                self.worker_id,
                b.layout.early_ack_pattern(b.acks.id),
            )
        if not await self.execution.wait_ready(CHILD_START_WAIT):
            log.warning(
                "worker %s: job processes still starting after %gs; serving with those up",
                self.worker_id,
                CHILD_START_WAIT,
            )
        for q in self.queues:
            consumer = await b.ensure_consumer(q)
            feed = PullFeed(
                b.nc,
                pull_api_subject(b.layout.jobs_stream, consumer),
                functools.partial(self._on_msg, q),
                clock=self.clock,
                on_ended=self._pull_now,
                on_lost=self._layout_lost,
            )
            await feed.start()
            self._feeds[q] = feed
        self.ack_wait = await held_ack_wait(b, self.queues)  # the keepalives' and the watchdog's pace

    def request_stop(self, graceful: bool = True) -> None:
        """Ask the worker to stop; safe from signal handlers and other threads."""
        self._stop.ask(graceful, self._force_stop)

    async def stop(self, graceful: bool = True) -> None:
        """Stop, and return once stopped (:meth:`shutdown`), a start() under way included (it stops as it
        ends); signal handlers and other threads: :meth:`request_stop`."""
        self.request_stop(graceful)
        await self._stop.start_over()
        if self.started is not None and self.started.is_set():
            await self.shutdown(self._stop.graceful and graceful)

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM/SIGHUP: first one stops gracefully, a second one at once (CLI use)."""
        stop_twice_on_signals(self.request_stop, log)

    def _force_stop(self) -> None:
        # A running call is cancelled in its slot's task, which hands the job back and ends.
        for d in list(self.running.values()):
            if d.task is not None:
                d.task.cancel()

    async def shutdown(self, graceful: bool = True) -> None:
        """Hand back what has not started, let running jobs finish within the grace period. Once only:
        a later or concurrent call (run()'s, stop()'s, start()'s) returns when that one has ended."""
        await self._stop.once(self._shut_down, graceful)

    async def _shut_down(self, graceful: bool) -> None:
        self.state = "stopping"
        for feed in self._feeds.values():
            await feed.close()
        # Buffered (not started) and parked jobs go straight back to the queue.
        while self.ready is not None and not self.ready.empty():
            await self._nak(self.ready.get_nowait())
        for d in self.gate.deliveries():
            self.gate.take(d.meta.job_id)
            await self._nak(d)
        # Heartbeats and in-progress acks go on while running jobs finish.
        if self.running and graceful and self._none_running is not None:
            try:
                await asyncio.wait_for(self._none_running.wait(), self.grace_period)
            except asyncio.TimeoutError:
                pass  # the grace period is over: what still runs is cancelled below
        self._force_stop()  # whatever still runs is cancelled and handed back by its slot
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)
        self._loops_end = True  # a loop whose cancel is lost (below) ends at its next round anyway
        pending = set(self._tasks)
        while pending:  # nats-py's publish and requests can swallow a cancellation: cancel again
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await asyncio.gather(*self._tasks, return_exceptions=True)  # (all done) their errors retrieved
        await self._close_resources()
        self.state = "stopped"
        log.info("worker %s stopped (%s)", self.worker_id, dict(self.stats))

    async def _close_resources(self) -> None:
        assert self.broker is not None  # connected by start(), which shutdown() follows
        await self.gate.close()
        if self._cancel_sub is not None:
            try:
                await self._cancel_sub.unsubscribe()
            except nats.errors.Error as exc:  # a connection closed for good: the job processes still go below
                log.debug("cancel subscription of %s: %s", self.worker_id, exc)
        if not self.broker.nc.is_connected:  # waiting out a JetStream timeout would only delay the stop
            log.debug("heartbeat of %s left to its TTL: not connected", self.worker_id)
        else:
            try:
                kv = await self.broker.kv(self.broker.layout.workers_bucket)
                await kv.delete(self.worker_id)
            except CONNECTION_ERRORS as exc:  # the heartbeat's TTL removes it anyway
                log.debug("removing the heartbeat of %s: %s", self.worker_id, exc)
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.execution is not None:
            await self.execution.close()
        if self.capture_output:
            uninstall_capture()
        if self._own_broker:
            await self.broker.close()

    async def _nak(self, d: Delivery) -> None:
        try:
            await nak(d.msg)
        except nats.errors.Error as exc:  # not nak'ed: JetStream redelivers it after ack_wait anyway
            log.debug("nak of job %s failed: %s", d.meta.job_id, exc)  # a Delivery always has its meta

    # --- the loops -------------------------------------------------------
    async def _every(self, interval: float, step: Callable[[float], Awaitable[None]]) -> None:
        while not self._loops_end:
            await asyncio.sleep(interval)
            try:
                await step(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a hiccup (reconnecting) must not kill the worker
                log.warning("%s failed: %s", getattr(step, "__name__", step), exc)

    async def _slot(self, i: int) -> None:
        assert self.ready is not None and self._none_running is not None  # made by start()
        # A stopping worker takes no new job: a slot that ends its job then ends too. (Its job runs
        # in the slot's task, and a stop's cancel that lands as the call returns can be lost in it:
        # 3.11's wait_for returns a result that is ready over a pending cancel.)
        while self.state not in ("stopping", "stopped"):
            d = await self.ready.get()
            jid = d.meta.job_id
            held = self.running.get(jid)
            if held is not None and held.seq == d.seq:
                # This message redelivered while this worker still runs it: its keepalives stalled (the
                # process was paused: a VM pause, a swap storm). The run in hand settles it; this delivery
                # is neither run nor counted as a lost run. (Another message of the job goes on below.)
                log.warning("job %s: redelivered (%d) while running here; the run in hand goes on", jid, d.delivered)
                await self.pull_once(self.clock(), min_deficit=max(1, self.concurrency // 4))
                continue
            self._taken += 1
            d.taken = self._taken
            self.running[jid] = d
            self._none_running.clear()
            if self.state == "idle":
                self.state = "busy"
            try:
                await self.runner.run(d)
            except asyncio.CancelledError:
                await self.runner.hand_back(d)  # stopped mid-job: hand it back for another worker
                me = asyncio.current_task()  # this slot's own task: never None here
                if self.state == "stopping" and me is not None and not me.cancelling():
                    return  # not this slot's cancel (job code raised it), but the worker is stopping
                raise
            except Exception as exc:
                log.exception("job %s: worker error; it is tried again later", jid)
                await self.runner.after_worker_error(d, exc)
            finally:
                self.running.pop(jid, None)
                if not self.running:
                    self._none_running.set()
                    if self.state == "busy":
                        self.state = "idle"
            if self.execution.threads.left:  # a thread the job left running keeps this slot
                await self.execution.threads.wait_left(jid)
            await self.pull_once(self.clock(), min_deficit=max(1, self.concurrency // 4))

    async def pull_once(self, now: float, min_deficit: int = 1) -> None:
        """Top up outstanding pull credit to the free capacity."""
        if self.state in ("stopping", "stopped") or self.ready is None:
            return
        held = self.ready.qsize() + len(self.running) + self.execution.threads.left  # (slots held by such threads)
        free = self.concurrency + self.prefetch - held
        for feed in self._feeds.values():
            feed.expire(now)
            if free - feed.credit >= min_deficit:
                await feed.want(free)

    async def _pull_now(self) -> None:
        """A pull request expired or was spent: ask now for what is free, not at the next tick."""
        try:
            await self.pull_once(self.clock())
        except (nats.errors.Error, OSError) as exc:  # reconnecting: the ticker asks again within a second
            log.debug("pull after a request ended failed: %s", exc)

    async def keepalive_once(self, now: float) -> None:
        """In-progress acks for every message this worker holds (running, buffered, parked)."""
        self._last_keepalive = now
        for d in self._held():
            try:
                await d.msg.in_progress()
            except nats.errors.Error as exc:  # reconnecting: the next round (well within ack_wait) tries again
                log.debug("in-progress ack failed: %s", exc)

    async def heartbeat_once(self, now: float) -> None:
        self._last_heartbeat = now
        rec: WorkerRecord = {
            "id": self.worker_id,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "concurrency": self.concurrency,
            "state": self.state,
            "execution": self.execution_mode,
            "running": sorted(self.running),
            "parked": len(self.gate.parked) if hasattr(self, "gate") else 0,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "stats": dict(self.stats),
        }
        assert self.broker is not None  # connected by start(), which sends the first heartbeat
        if not self.broker.nc.is_connected:  # it could not land (it would wait out a timeout): the next one will
            return
        kv = await self.broker.kv(self.broker.layout.workers_bucket)
        await kv.put(self.worker_id, encode_heartbeat(rec))

    def _held(self) -> list[Delivery]:
        """Every message this worker holds: running, buffered and parked."""
        held = list(self.running.values()) + (self.gate.deliveries() if hasattr(self, "gate") else [])
        return held + list(getattr(self.ready, "_queue", ()))

    async def _watchdog_broker(self) -> Broker:
        # The watchdog's own connection, made on its thread's loop: the worker's loop is the one blocked.
        return await Broker.connect(settings=self.settings, **self._nats_options)

    # --- arrivals --------------------------------------------------------
    def _on_msg(self, queue: str, msg: Any) -> None:
        try:
            meta = parse_meta(msg)
        except SerializationError as exc:
            self._spawn(self._refill_after(self.runner.dead.reject_malformed(msg, queue, exc)))
            return
        if meta.queue != queue and self.settings.signing_keys:
            # Signed for another queue (its header names it) and re-published on this one.
            why = f"bad signature: job {meta.job_id} was signed for queue {meta.queue!r}, not {queue!r}"
            self._spawn(self._refill_after(self.runner.dead.reject(msg, queue, why)))
            return
        assert self.ready is not None  # the feeds deliver only after start() made it
        delivered, seq = ack_numbers(msg)
        d = Delivery(
            msg=msg,
            meta=meta,
            delivered=delivered,
            seq=seq,
            suspect=self.watchdog is not None and self.watchdog.suspect(),
        )
        if self.state in ("stopping", "stopped"):
            self._spawn(nak(d.msg))
        elif meta.options.depends_on:
            self._spawn(self._refill_after(self.gate.admit(d)))
        else:
            self.ready.put_nowait(d)

    async def _refill_after(self, step: Awaitable[Any]) -> None:
        """A message settled off the slots (parked, rejected) frees pull credit too: top it up."""
        try:
            await step
        finally:
            await self.pull_once(self.clock(), min_deficit=max(1, self.concurrency // 4))

    def _enqueue_ready(self, d: Delivery) -> None:
        assert self.ready is not None  # the gate releases only after start() made it
        if self.state in ("stopping", "stopped"):
            self._spawn(nak(d.msg))
        else:
            self.ready.put_nowait(d)

    async def _on_cancel(self, msg: Any) -> None:
        jid = msg.data.decode(errors="replace")
        self.cancelled_ids[jid] = None
        while len(self.cancelled_ids) > 10000:
            self.cancelled_ids.popitem(last=False)
        d = self.running.get(jid)
        if d is not None and d.task is not None:
            d.cancelled = True
            d.task.cancel()
            return
        parked = self.gate.take(jid)
        if parked is not None:
            self._spawn(self.runner.finish_cancelled(parked))

    def _closed_cb(self, user_cb: Callable[[], Awaitable[None]] | None) -> Callable[[], Awaitable[None]]:
        async def closed() -> None:
            # nats-py gave up (reconnects ran out, a protocol violation): stop, not idle for ever (exit 1).
            if self._stop.asked is not None and not self._stop.asked.is_set():
                self.connection_lost = f"worker {self.worker_id}: its NATS connection was closed for good; it stopped"
                log.error("%s", self.connection_lost)
                self.request_stop(graceful=False)
            if user_cb is not None:
                await user_cb()

        return closed

    async def _on_reconnect(self) -> None:
        for feed in self._feeds.values():
            feed.reset()
        self._spawn(self._restore_then_reindex())
        await self.pull_once(self.clock())

    async def _restore_then_reindex(self) -> None:
        try:
            await self._restore_layout()  # the server may be back without its store
        finally:
            if hasattr(self, "gate"):  # parks published while disconnected were not seen (read once remade)
                await self.gate.reindex()

    def _layout_lost(self) -> None:
        """A pull found no consumer, or a write no stream (deleted under the worker): make them again,
        at most every :data:`RESTORE_EVERY` seconds. Meanwhile pulls fail and come again with the
        ticker, and a result write that fails is tried again, then handed back: nothing is lost."""
        if self.broker is not None:
            self.broker.layout_lost()  # made again once the deletion is over (REMAKE_GRACE)
        now = self.clock()
        if now < self._restore_after or self.state in ("stopping", "stopped"):
            return
        self._restore_after = now + RESTORE_EVERY
        log.warning("worker %s: its streams or consumer are gone (deleted?); making them again", self.worker_id)
        self._spawn(self._restore_layout())

    async def _restore_layout(self) -> None:
        """Streams, buckets and this worker's consumers checked and made again where missing (the
        layout was forgotten already: by the reconnect, or by :meth:`_layout_lost`)."""
        b = self.broker
        if b is None:
            return
        await b.ensure_layout()
        for q in self._feeds:
            await b.ensure_consumer(q)

    # --- background completions -----------------------------------------
    def _alone(self, d: Delivery) -> bool:
        """No other job taken while ``d`` was in hand, and none in hand now: its client is told early
        (``JobRunner._commit``). A worker that keeps up with a stream of jobs holds few at a time,
        yet takes others during each one: that says busy, where the jobs in hand would not."""
        others = len(self.running) - (d.meta.job_id in self.running)
        return self._taken == d.taken and not others and (self.ready is None or self.ready.empty())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background step failed: %r", task.exception())

    async def complete_in_background(self, coro: Awaitable[Any]) -> None:
        """Let result/status/ack writes finish while the slot takes the next job."""
        slots = self._completion_slots
        assert slots is not None
        await slots.acquire()

        async def _run() -> None:
            try:
                await coro
            finally:
                slots.release()
            if not self.running:  # idle again: its counts go out now (at most one extra heartbeat per 0.5 s)
                await asyncio.sleep(max(0.0, 0.5 - (self.clock() - self._last_heartbeat)))
                if not self.running and self.clock() - self._last_heartbeat >= 0.5:
                    await self.heartbeat_once(self.clock())

        self._spawn(_run())

    def __repr__(self) -> str:
        return f"<Worker {self.worker_id} queues={self.queues} concurrency={self.concurrency} {self.state}>"
