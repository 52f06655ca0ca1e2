"""A thread that watches a worker's event loop and keeps its messages alive while the loop is blocked.

An async job that calls blocking code (``time.sleep``, a long computation)
stops the worker's loop: no in-progress acks, no heartbeats. Left alone,
JetStream would redeliver the job after ``ack_wait`` and it would run twice.

The watchdog is a plain thread, so it runs while the loop is stuck:

* the loop touches a timestamp every :data:`TICK` seconds; when it is older
  than ``block_after``, the watchdog logs which job blocks it (the name of the
  loop's current task, ``naq-job:<id>``) and repeats that every 30 s;
* once the block lasts longer than a third of ``ack_wait``, it sends the
  in-progress acks itself, over its own connection (an ack is a plain publish
  to the message's reply subject, so any connection can send it), for every
  message the worker holds. Nothing is redelivered while the process lives.

Messages the server pushed while the loop was blocked sit unread in the
socket and are redelivered elsewhere after ``ack_wait``. When the loop comes
back from a block longer than half of ``ack_wait``, messages arriving in the
next ``ack_wait`` are :meth:`suspect`: the runner checks the job's status
first and drops its copy if another delivery has started or ended it.

A pause of the whole process (SIGSTOP, a VM pause) also leaves the loop's
tick stale; the watchdog's own timer overran then too, with no CPU spent, so
it logs the pause instead of blaming a job.

Limit: a loop blocked forever holds its running job's message forever (the
worker's heartbeat goes stale and the watchdog keeps logging the job; stop
the worker, and the job is counted as a lost run when it comes back).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Awaitable, Callable

__all__ = ["LoopWatchdog", "TICK"]

log = logging.getLogger("naq_nb.worker")

TICK = 0.25
_REPEAT_LOG = 30.0


class LoopWatchdog:
    """Watches ``loop``; ``held()`` lists the messages to keep alive; ``connect()`` makes a Broker."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        held: Callable[[], list[Any]],
        connect: Callable[[], Awaitable[Any]],
        *,
        ack_wait: float,
        block_after: float = 2.0,
        name: str = "naq-watchdog",
    ) -> None:
        self.loop = loop
        self.held = held
        self.connect = connect
        self.ack_wait = ack_wait
        self.block_after = block_after
        self.last_tick = time.monotonic()
        self.blocked_for = 0.0
        self.keepalives_sent = 0
        self.suspect_until = 0.0
        self._stop = threading.Event()
        # The watching thread's loop and an event on it: stop() wakes the thread at once, not after a round.
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start ticking on the loop (call from the loop's thread) and the watching thread."""
        self._tick()
        self._thread.start()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self.last_tick > self.ack_wait / 2:
            # Messages pushed meanwhile sat unread in the socket and may have gone to another worker.
            self.suspect_until = now + self.ack_wait
        self.last_tick = now
        self._handle = self.loop.call_later(TICK, self._tick)

    def suspect(self) -> bool:
        """True shortly after a long block: a message arriving now may be a stale delivery."""
        return time.monotonic() < self.suspect_until

    def stop(self) -> None:
        """Stop watching (from the loop's thread); the thread ends within a second."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        wake = self._wake
        if wake is not None:
            try:
                wake[0].call_soon_threadsafe(wake[1].set)
            except RuntimeError:  # the watching loop has already ended
                pass
        self._thread.join(2.0)

    def _blocker(self) -> str:
        try:
            task = asyncio.current_task(self.loop)  # read from another thread: a dict lookup, good enough to report
        except RuntimeError:
            return "?"
        if task is None:
            return "code outside any task"
        name = task.get_name()
        return f"job {name.split(':', 1)[1]}" if name.startswith("naq-job:") else f"task {name}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._watch())
        finally:
            loop.close()

    async def _watch(self) -> None:
        broker = None
        last_log = last_keepalive = 0.0
        keep_after = self.ack_wait / 3
        wake = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), wake)  # set before the first check of _stop (see stop())
        interval = min(0.25, self.block_after / 2, self.ack_wait / 8)
        rounds = _Rounds(interval, self.block_after)
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), interval)
                    break  # stop() woke us
                except asyncio.TimeoutError:
                    pass
                now = time.monotonic()
                paused = rounds.paused(now)
                if paused:
                    # The loop's stale tick is the pause's, not blocking code's: say that, not "blocked".
                    log.warning("worker process was paused for %.1fs (SIGSTOP, a VM pause or the host)", paused)
                    last_log = 0.0
                    continue
                self.blocked_for = now - self.last_tick
                if self.blocked_for < min(self.block_after, keep_after, 4 * TICK):
                    last_log = 0.0
                    continue
                broker = broker or await self._connect()  # early: connecting takes a moment
                if self.blocked_for >= self.block_after and now - last_log > _REPEAT_LOG:
                    last_log = now
                    log.warning(
                        "event loop blocked for %.1fs by %s: async jobs must not call blocking code "
                        "(use a sync function, or await asyncio.to_thread(...))",
                        self.blocked_for,
                        self._blocker(),
                    )
                if broker is not None and self.blocked_for > keep_after and now - last_keepalive > keep_after:
                    last_keepalive = now
                    await self._keep_alive(broker)
        finally:
            if broker is not None:
                await broker.close()

    async def _connect(self) -> Any:
        try:
            return await self.connect()
        except Exception as exc:  # keep watching and logging; the next round tries again
            log.error("watchdog cannot connect to keep held jobs alive: %s", exc)
            return None

    async def _keep_alive(self, broker: Any) -> None:
        try:
            held = self.held()
        except RuntimeError:  # the loop thread resumed and changed the collections meanwhile
            return
        for d in held:
            reply = getattr(d.msg, "reply", None)
            if reply:
                await broker.nc.publish(reply, b"+WPI")
                self.keepalives_sent += 1
        await broker.nc.flush(timeout=2)


class _Rounds:
    """Tells a pause of the whole process from a blocked loop. This thread's own timer overran too,
    and the process spent almost no CPU meanwhile: it was stopped (SIGSTOP, a VM pause), and the
    loop with it. A loop holding the GIL in a long C call also delays this thread, but burns CPU."""

    def __init__(self, interval: float, after: float) -> None:
        self.interval = interval
        self.after = after
        self.last = (time.monotonic(), time.process_time())

    def paused(self, now: float) -> float:
        """Seconds the process stood still since the last round (0.0: it did not)."""
        cpu = time.process_time()
        wall, was_cpu = self.last
        self.last = (now, cpu)
        overrun = now - wall - self.interval
        return overrun if overrun >= self.after and cpu - was_cpu < overrun / 4 else 0.0
