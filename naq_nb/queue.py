"""naq's ``naq.queue`` module path: ``from naq_nb.queue import Queue, enqueue_sync, close_sync_connections``."""

from .client.compat import (  # noqa: F401
    Queue,
    close_sync_connections,
    enqueue,
    enqueue_sync,
    purge_queue,
    purge_queue_sync,
)
from .client.scheduling import (  # noqa: F401
    cancel_scheduled_job,
    cancel_scheduled_job_sync,
    enqueue_at,
    enqueue_at_sync,
    enqueue_in,
    enqueue_in_sync,
    modify_scheduled_job,
    modify_scheduled_job_sync,
    pause_scheduled_job,
    pause_scheduled_job_sync,
    resume_scheduled_job,
    resume_scheduled_job_sync,
    schedule,
    schedule_sync,
)
