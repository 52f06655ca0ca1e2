"""taskiq on NATS JetStream (taskiq-nats): ``taskiq worker``, 1 process, 10 async tasks at once.

PullBasedJetStreamBroker (durable: a queue filled before the worker starts is kept) and the
NATS object-store result backend, both with their defaults; ``wait_result`` polls every 1 ms.

One change from the defaults, which a user would need as well: each poll of the object store makes
an ordered consumer on its stream (nats-py's ``ObjectStore.get``), and nats-server 2.15 limits a
stream to 1,000 consumers unless the stream names its own limit, so reading back 2,000 results
failed with "maximum consumers limit reached". The results bucket's stream gets a higher limit
before the first job (:data:`RESULT_CONSUMERS`).
"""

import os

import nats
from nats.js.errors import BucketNotFoundError
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

_url = os.environ["BENCH_NATS_URL"]
_results = NATSObjectStoreResultBackend(servers=_url)
broker = PullBasedJetStreamBroker(servers=_url).with_result_backend(_results)
RESULT_CONSUMERS = 1_000_000  # (a value <= 0 means the server's default of 1,000)


async def _roomy_results_bucket() -> None:
    """The result backend's object store, its stream allowed :data:`RESULT_CONSUMERS` consumers."""
    nc = await nats.connect(_url)
    try:
        js = nc.jetstream()
        try:
            await js.object_store(_results.bucket_name)
        except BucketNotFoundError:
            await js.create_object_store(_results.bucket_name)
        stream = f"OBJ_{_results.bucket_name}"
        config = (await js.stream_info(stream)).config
        if config.max_consumers != RESULT_CONSUMERS:
            config.max_consumers = RESULT_CONSUMERS
            await js.update_stream(config)
    finally:
        await nc.close()


@broker.task
async def noop():
    return 1


def version() -> str:
    from importlib.metadata import version as v
    return f"{v('taskiq')} (taskiq-nats {v('taskiq-nats')})"


class Bench:
    stop_grace = 3.0  # like lib_taskiq: idle whenever stopped
    notes = ("taskiq worker --workers 1 --max-async-tasks 10 (PullBasedJetStreamBroker, "
             "object-store results, its stream allowed 1M consumers); wait_result(check_interval=0.001) (polls)")

    def worker_argv(self, bindir: str) -> list[str]:
        return [f"{bindir}/taskiq", "worker", "lib_taskiq_nats:broker", "--workers", "1",
                "--max-async-tasks", "10", "--log-level", "WARNING"]

    async def open(self) -> None:
        await _roomy_results_bucket()
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
