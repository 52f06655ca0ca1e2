"""naq_nb with an async no-op (``async def``), the kind of task taskiq's, saq's and arq's runs are measured with:
it runs on the worker's loop, where ``lib_naq_nb``'s sync no-op runs in one of the worker's job processes.
Same calls (``await Queue.enqueue(fn)``, ``await fetch_job_result(job, timeout=60)``) and worker."""

from lib_naq_nb import Bench as _SyncJobBench
from lib_naq_nb import anoop, version  # noqa: F401  (version: read by the driver)


class Bench(_SyncJobBench):
    notes = ("naq worker bench -c 10; an async job (on the worker's loop); await Queue.enqueue(fn); "
             "await fetch_job_result(job, timeout=60) (push)")

    async def enqueue(self):
        return await self.queue.enqueue(anoop)
