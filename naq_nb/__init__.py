"""naq_nb: a job queue on NATS JetStream, made first for Jupyter notebooks.

Layers (each only imports the ones before it):
``naq_nb.core`` (engine: layout, queue, worker, scheduler, embedded server) →
``naq_nb.client`` (background loop, sync/async calls, futures) →
``naq_nb.notebook`` (local cluster, widgets, magics, sweeps) → ``naq_nb.cli``.

Notebook pieces are imported lazily, so a worker-only install stays small.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from .client.client import Client
from .client.shared import get_client
from .client.compat import (
    JobTemplate,
    Queue,
    cancel_job,
    cancel_job_sync,
    close_sync_connections,
    enqueue,
    enqueue_many,
    enqueue_many_sync,
    enqueue_sync,
    fetch_job_result,
    fetch_job_result_sync,
    get_job_status,
    get_job_status_sync,
    list_workers,
    list_workers_sync,
    purge_queue,
    purge_queue_sync,
)
from .core.context import current_job, log, progress
from .core.errors import (
    ConfigurationError,
    DependencyFailedError,
    JobCancelledError,
    JobExecutionError,
    JobNotFinishedError,
    JobNotFoundError,
    JobTimeoutError,
    LayoutConflictError,
    NaqConnectionError,
    NaqException,
    PayloadTooLargeError,
    SerializationError,
    ServerBinaryNotFound,
    SignatureError,
    UnknownQueueError,
)
from .core.job import Job, JobOptions, JobStatus
from .core.retry import RetryPolicy
from .core.server import EmbeddedServer
from .core.settings import Settings
from .client.services import Worker

__version__ = "0.1.0"

# A library adds no handlers beyond this: the application decides where logs go.
logging.getLogger("naq_nb").addHandler(logging.NullHandler())


def _live_display(future: Any) -> None:
    """First display of a job in IPython: load the notebook layer's live displays, then show it again."""
    from .client import future as future_mod

    future_mod.display_hook = None  # without the notebook layer (no ipywidgets): the static summary
    try:
        from .notebook.widgets import install_display_hooks

        install_display_hooks()
    except ImportError:
        pass
    future._ipython_display_()


def _arm_display_hook() -> None:
    # Cheap at import: the notebook layer (ipywidgets) loads on the first display only.
    from .client import future as future_mod

    if future_mod.display_hook is None:
        future_mod.display_hook = _live_display


_arm_display_hook()

# The scheduling calls (naq's names), imported on first use.
_SCHEDULING = (
    "enqueue_at",
    "enqueue_at_sync",
    "enqueue_in",
    "enqueue_in_sync",
    "schedule",
    "schedule_sync",
    "cancel_scheduled_job",
    "cancel_scheduled_job_sync",
    "pause_scheduled_job",
    "pause_scheduled_job_sync",
    "resume_scheduled_job",
    "resume_scheduled_job_sync",
    "modify_scheduled_job",
    "modify_scheduled_job_sync",
    "list_scheduled",
    "list_scheduled_sync",
)

__all__ = [
    # naq-compatible API
    "enqueue",
    "enqueue_sync",
    "enqueue_many",
    "enqueue_many_sync",
    "fetch_job_result",
    "fetch_job_result_sync",
    "get_job_status",
    "get_job_status_sync",
    "cancel_job",
    "cancel_job_sync",
    "list_workers",
    "list_workers_sync",
    "purge_queue",
    "purge_queue_sync",
    "close_sync_connections",
    "Queue",
    "JobTemplate",
    "Worker",
    "Job",
    "JobOptions",
    "JobStatus",
    "RetryPolicy",
    "Client",
    "get_client",
    "EmbeddedServer",
    "Settings",
    "current_job",
    "progress",
    "log",
    # errors
    "NaqException",
    "NaqConnectionError",
    "ConfigurationError",
    "SerializationError",
    "PayloadTooLargeError",
    "JobNotFoundError",
    "JobNotFinishedError",
    "JobExecutionError",
    "JobCancelledError",
    "JobTimeoutError",
    "DependencyFailedError",
    "LayoutConflictError",
    "ServerBinaryNotFound",
    "SignatureError",
    "UnknownQueueError",
    # naq's other names (lazy, below)
    "Scheduler",
    "JOB_STATUS",
    "WORKER_STATUS",
    "SCHEDULED_JOB_STATUS",
    "RetryDelayType",
    "connect",
    "disconnect",
    "get_nats_connection",
    "get_jetstream_context",
    "close_nats_connection",
    # scheduling (lazy, below)
    *_SCHEDULING,
]
# (DEFAULT_NATS_URL is naq's name too, but reads NAQ_NATS_URL when looked up: a star import would
# read the environment at import, which naq_nb never does.)

# name -> module that defines it; imported on first access (notebook layer, scheduler).
_LAZY: dict[str, str] = {
    # scheduler (naq's keywords on the core one) and its client calls
    "Scheduler": "naq_nb.client.services",
    "ScheduleNotFoundError": "naq_nb.core.schedules",
    # naq's remaining top-level names
    **{
        n: "naq_nb.client.naq_names"
        for n in (
            "JOB_STATUS",
            "WORKER_STATUS",
            "SCHEDULED_JOB_STATUS",
            "RETRY_STRATEGY",
            "RetryDelayType",
            "get_nats_connection",
            "get_jetstream_context",
            "close_nats_connection",
            "disconnect",
        )
    },
    "ScheduledTemplate": "naq_nb.client.scheduling",
    **{n: "naq_nb.client.scheduling" for n in _SCHEDULING},
    # notebook-first client: futures and the session calls
    "JobFuture": "naq_nb.client.future",
    **{
        n: "naq_nb.client.group"
        for n in (
            "JobGroup",
            "gather",
            "gather_async",
            "as_completed",
            "as_completed_async",
            "wait",
            "wait_async",
            "FIRST_COMPLETED",
            "FIRST_EXCEPTION",
            "ALL_COMPLETED",
        )
    },
    **{
        n: "naq_nb.client.session"
        for n in (
            "connect",
            "connect_async",
            "submit",
            "submit_async",
            "map",
            "map_async",
            "options",
            "Submitter",
            "job",
            "job_async",
            "default_client",
            "set_default_client",
        )
    },
    # large values stored once, passed by reference
    **{
        n: "naq_nb.client.objects"
        for n in (
            "put",
            "put_async",
            "get_object",
            "get_object_async",
            "delete_object",
            "delete_object_async",
            "ObjectRef",
        )
    },
    "BlobError": "naq_nb.core.blobs",
    "JobNotStoredError": "naq_nb.core.errors",
    # (named in the README beside the others: importable from the package too, as naq_nb.exceptions has them)
    "DuplicateJobError": "naq_nb.core.errors",
    "ConcurrentUpdateError": "naq_nb.core.errors",
    "PublishTimeoutError": "naq_nb.core.errors",
    "NoAnswerError": "naq_nb.core.errors",
    # notebook layer
    **{
        n: "naq_nb.notebook.frames"
        for n in (
            "jobs",
            "workers",
            "schedules",
            "failed",
            "jobs_async",
            "workers_async",
            "schedules_async",
            "failed_async",
        )
    },
    "local": "naq_nb.notebook.local",
    "local_async": "naq_nb.notebook.local",
    "LocalCluster": "naq_nb.notebook.local",
    "sweep": "naq_nb.notebook.sweep",
    "sweep_async": "naq_nb.notebook.sweep",
    "Sweep": "naq_nb.notebook.sweep",
    "dashboard": "naq_nb.notebook.dashboard",
    "dashboard_async": "naq_nb.notebook.dashboard",
    "load_ipython_extension": "naq_nb.notebook.magics",
    "unload_ipython_extension": "naq_nb.notebook.magics",
}


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_NATS_URL":  # naq's constant; read from NAQ_NATS_URL when imported, never cached
        from .client.naq_names import default_nats_url

        return default_nats_url()
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'naq_nb' has no attribute {name!r}")
    value = getattr(import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(_LAZY))
