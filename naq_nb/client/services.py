"""naq's ``Worker`` and ``Scheduler`` constructors on naq_nb's services.

naq's keywords, in naq's order, each with naq's meaning:

* ``Worker(queues, nats_url, concurrency, worker_name, heartbeat_interval,
  worker_ttl, ack_wait, module_paths)``. ``worker_ttl`` and ``ack_wait`` are
  the TTL of the workers bucket and the ack wait of a queue's consumer, so (as
  in naq) they take effect where this worker creates them; an existing bucket or
  consumer keeps its own. A per-queue ``ack_wait`` dict is refused (one shared
  consumer per queue has one ack wait).
* ``Scheduler(nats_url, poll_interval, instance_id, enable_ha)``. The scheduler
  fires each job at its due time (a timer and a KV watch), so it does not need
  to poll; ``poll_interval`` caps how long its timer sleeps between checks.

naq_nb's own keywords (``name=``, ``settings=``, ``ha=``, ...) work as well.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any, Iterable, Mapping

from ..core.errors import ConfigurationError
from ..core.registry import WorkerRecord
from ..core.scheduler import Scheduler as CoreScheduler
from ..core.settings import Settings
from ..core.worker import Worker as CoreWorker
from .twins import blocking

__all__ = ["Worker", "Scheduler", "add_module_paths"]


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def add_module_paths(paths: str | Iterable[str] | None) -> None:
    """Put ``paths`` first on ``sys.path`` (naq's ``module_paths``), so jobs' modules import."""
    if paths is None:
        return
    for p in [paths] if isinstance(paths, str) else list(paths):
        if not isinstance(p, str) or not p:
            raise ConfigurationError(f"module_paths entries must be non-empty strings, not {p!r}")
        if p not in sys.path:
            sys.path.insert(0, p)


class Worker(CoreWorker):
    """A worker (see :class:`naq_nb.core.worker.Worker`) taking naq's keywords too."""

    def __init__(
        self,
        queues: str | Iterable[str] | None = None,
        nats_url: str | None = None,
        concurrency: int = 10,
        worker_name: str | None = None,
        heartbeat_interval: float | None = None,
        worker_ttl: float | None = None,
        ack_wait: float | Mapping[str, float] | None = None,
        module_paths: str | Iterable[str] | None = None,
        *,
        name: str | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        if worker_name is not None and name is not None and worker_name != name:
            raise ConfigurationError(f"give worker_name or name, not both ({worker_name!r}, {name!r})")
        changes: dict[str, float] = {}
        if heartbeat_interval is not None:
            changes["heartbeat_interval"] = _positive(heartbeat_interval, "heartbeat_interval")
        if worker_ttl is not None:
            changes["worker_ttl"] = _positive(worker_ttl, "worker_ttl")
        if (
            "heartbeat_interval" in changes
            and "worker_ttl" in changes
            and changes["heartbeat_interval"] >= changes["worker_ttl"]
        ):
            raise ConfigurationError(
                f"heartbeat_interval ({heartbeat_interval}) must be below worker_ttl "
                f"({worker_ttl}), or the worker's record expires between heartbeats"
            )
        if isinstance(ack_wait, Mapping):
            raise ConfigurationError(
                "a per-queue ack_wait dict is not supported: all workers of a queue share "
                "one consumer with one ack wait; give one number (or set NAQ_ACK_WAIT)"
            )
        if ack_wait is not None:
            changes["ack_wait"] = _positive(ack_wait, "ack_wait")
        add_module_paths(module_paths)
        if changes:
            settings = (settings or Settings.from_env()).with_(**changes)
        super().__init__(
            queues, nats_url=nats_url, concurrency=concurrency, name=name or worker_name, settings=settings, **kwargs
        )

    def run_sync(self) -> None:
        """naq's blocking run: until SIGINT/SIGTERM (in the main thread) or :meth:`request_stop`."""

        async def _run() -> None:
            if threading.current_thread() is threading.main_thread():
                self.install_signal_handlers()
            await self.run()

        asyncio.run(_run())

    @staticmethod
    async def list_workers(nats_url: str | None = None) -> list[WorkerRecord]:
        """naq's ``Worker.list_workers``: live workers from their heartbeats."""
        from .compat import list_workers

        return await list_workers(nats_url)

    list_workers_sync = blocking(list_workers)


class Scheduler(CoreScheduler):
    """A scheduler (see :class:`naq_nb.core.scheduler.Scheduler`) taking naq's keywords too."""

    def __init__(
        self,
        nats_url: str | None = None,
        poll_interval: float | None = None,
        instance_id: str | None = None,
        enable_ha: bool | None = None,
        *,
        ha: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if enable_ha is not None and ha is not None and bool(enable_ha) != bool(ha):
            raise ConfigurationError(f"enable_ha={enable_ha!r} and ha={ha!r} disagree; give one")
        if poll_interval is not None:
            poll_interval = _positive(poll_interval, "poll_interval")
        super().__init__(
            nats_url,
            instance_id=instance_id,
            ha=True if enable_ha is None and ha is None else bool(ha if ha is not None else enable_ha),
            **kwargs,
        )
        if poll_interval is not None:
            self.max_sleep = poll_interval

    def run_sync(self) -> None:
        """Blocking :meth:`run`: until SIGINT/SIGTERM (in the main thread) or :meth:`request_stop`."""

        async def _run() -> None:
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_stop)
            await self.run()

        asyncio.run(_run())

    @property
    def enable_ha(self) -> bool:
        """naq's name: True when several schedulers take turns through the leader lease."""
        return self.ha

    @property
    def poll_interval(self) -> float:
        """naq's name: the longest the scheduler sleeps between checks (jobs fire at their due time anyway)."""
        return self.max_sleep
