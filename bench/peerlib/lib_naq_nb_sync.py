"""naq_nb through its blocking calls, as a script or a notebook cell makes them: ``Queue.enqueue_sync(fn)``
and ``fetch_job_result_sync(job, timeout=60)``; same worker as ``lib_naq_nb``. Not in the default set."""

from lib_naq_nb import Bench as _AsyncBench
from lib_naq_nb import _url, noop, version  # noqa: F401  (version: read by the driver)


class Bench(_AsyncBench):
    notes = "naq worker bench -c 10; Queue.enqueue_sync(fn); fetch_job_result_sync(job, timeout=60) (push)"

    def enqueue(self):
        return self.queue.enqueue_sync(noop)

    def result(self, job, timeout: float):
        from naq_nb import fetch_job_result_sync
        return fetch_job_result_sync(job, nats_url=_url, timeout=timeout)

    def done(self, job) -> bool:
        from naq_nb import JobNotFinishedError, fetch_job_result_sync
        try:
            fetch_job_result_sync(job, nats_url=_url, timeout=0)
            return True
        except JobNotFinishedError:
            return False
