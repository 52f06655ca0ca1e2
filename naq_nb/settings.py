"""naq's ``naq.settings`` module path.

naq reads these constants from the environment when it is imported; here each
is read when the name is looked up (``from naq_nb.settings import X`` reads it
then), through :class:`naq_nb.core.settings.Settings`, so naq's variable names
work as aliases of ours. naq_nb's own code never imports this module.
"""

from __future__ import annotations

from typing import Any

from .client.naq_names import JOB_STATUS, RETRY_STRATEGY, SCHEDULED_JOB_STATUS, WORKER_STATUS  # noqa: F401

# naq's constant -> Settings attribute it mirrors
_FROM_SETTINGS = {
    "DEFAULT_NATS_URL": "nats_url",
    "DEFAULT_QUEUE_NAME": "default_queue",
    "NAQ_PREFIX": "prefix",
    "JOB_SERIALIZER": "serializer",
    "DEFAULT_RESULT_TTL_SECONDS": "result_ttl",
    "JOB_STATUS_TTL_SECONDS": "status_ttl",
    "DEFAULT_ACK_WAIT_SECONDS": "ack_wait",
    "DEFAULT_WORKER_TTL_SECONDS": "worker_ttl",
    "DEFAULT_WORKER_HEARTBEAT_INTERVAL_SECONDS": "heartbeat_interval",
    "SCHEDULER_LOCK_TTL_SECONDS": "leader_ttl",
}


def __getattr__(name: str) -> Any:
    if name in _FROM_SETTINGS:
        from .core.settings import Settings

        return getattr(Settings.from_env(), _FROM_SETTINGS[name])
    if name == "LOG_LEVEL":
        import os

        return os.environ.get("NAQ_LOG_LEVEL", "INFO").upper()
    raise AttributeError(f"module 'naq_nb.settings' has no attribute {name!r}")
