"""taskiq on NATS JetStream (taskiq-nats): ``taskiq worker``, 1 process, 10 async tasks at once.

PullBasedJetStreamBroker (durable: a queue filled before the worker starts is kept) and the
NATS object-store result backend, both with their defaults; ``wait_result`` polls every 1 ms.
"""

import os

from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

_url = os.environ["BENCH_NATS_URL"]
broker = PullBasedJetStreamBroker(servers=_url).with_result_backend(NATSObjectStoreResultBackend(servers=_url))


@broker.task
async def noop():
    return 1


def version() -> str:
    from importlib.metadata import version as v
    return f"{v('taskiq')} (taskiq-nats {v('taskiq-nats')})"


class Bench:
    stop_grace = 3.0  # like lib_taskiq: idle whenever stopped
    notes = ("taskiq worker --workers 1 --max-async-tasks 10 (PullBasedJetStreamBroker, "
             "object-store results); wait_result(check_interval=0.001) (polls)")

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/taskiq", "worker", "lib_taskiq_nats:broker", "--workers", "1",
                "--max-async-tasks", "10", "--log-level", "WARNING"]

    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self):
        return await noop.kiq()

    async def result(self, task, timeout: float):
        r = await task.wait_result(check_interval=0.001, timeout=timeout)
        if r.is_err:
            raise RuntimeError(f"taskiq job failed: {r.error!r}")
        return r.return_value

    async def done(self, task) -> bool:
        return await task.is_ready()

    async def close(self) -> None:
        await broker.shutdown()
