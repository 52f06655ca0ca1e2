"""Settings read from ``NAQ_*`` environment variables.

The environment is read when :func:`Settings.from_env` is called, never at import
time, so a notebook can set ``os.environ`` and then connect.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Mapping

__all__ = ["Settings", "ENV_VARS"]

# name -> (attribute, default, description); the README's configuration table mirrors this.
ENV_VARS: dict[str, tuple[str, str, str]] = {
    "NAQ_NATS_URL": ("nats_url", "nats://127.0.0.1:4222", "NATS server URL(s), comma separated"),
    "NAQ_DEFAULT_QUEUE": ("default_queue", "default", "queue used when none is named"),
    "NAQ_JOB_SERIALIZER": ("serializer", "pickle", "`pickle` (cloudpickle) or `json`"),
    "NAQ_JSON_ALLOWED": ("json_allowed", "", "comma-separated module prefixes a JSON-mode worker may call; empty = any importable"),
    "NAQ_SIGNING_KEY": ("signing_key", "", "shared secret; when set, pickled payloads are HMAC-signed and workers refuse unsigned ones"),
    "NAQ_RESULT_TTL": ("result_ttl", "86400", "seconds results are kept (bucket TTL)"),
    "NAQ_STATUS_TTL": ("status_ttl", "604800", "seconds job status records are kept"),
    "NAQ_ACK_WAIT": ("ack_wait", "30", "seconds before an unacknowledged job is redelivered"),
    "NAQ_HEARTBEAT": ("heartbeat_interval", "5", "seconds between worker heartbeats"),
    "NAQ_WORKER_TTL": ("worker_ttl", "30", "seconds a worker record lives without a heartbeat"),
    "NAQ_SCHEDULER_LEASE": ("leader_ttl", "8", "seconds a scheduler's leadership lease lives without renewal (failover time)"),
    "NAQ_CONNECT_TIMEOUT": ("connect_timeout", "5", "seconds before a connection attempt gives up"),
    "NAQ_REPLICAS": ("replicas", "1", "stream and bucket replicas (3 on a cluster)"),
    "NAQ_PREFIX": ("prefix", "naq", "prefix of every subject, stream and bucket name"),
    "NAQ_NATS_SERVER_BIN": ("server_bin", "", "path of the nats-server binary for the embedded server"),
}


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`, adjust with :meth:`with_`."""

    nats_url: str = "nats://127.0.0.1:4222"
    default_queue: str = "default"
    serializer: str = "pickle"
    json_allowed: tuple[str, ...] = ()
    signing_key: bytes = b""
    result_ttl: float = 86400.0
    status_ttl: float = 604800.0
    ack_wait: float = 30.0
    heartbeat_interval: float = 5.0
    worker_ttl: float = 30.0
    leader_ttl: float = 8.0
    connect_timeout: float = 5.0
    replicas: int = 1
    prefix: str = "naq"
    server_bin: str = ""
    nats_options: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = naq_aliases(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for var, (attr, _default, _doc) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[attr] = _convert(var, attr, raw, types[attr])
        settings = cls(**values)
        return settings.with_(**{k: v for k, v in overrides.items() if v is not None})

    def with_(self, **changes: object) -> "Settings":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        s = replace(self, **changes)
        if s.serializer not in ("pickle", "json"):
            raise ValueError(f"NAQ_JOB_SERIALIZER must be 'pickle' or 'json', not {s.serializer!r}")
        return s


def _convert(var: str, attr: str, raw: str, typ: object) -> object:
    try:
        if typ == "float":
            return float(raw)
        if typ == "int":
            return int(raw)
        if typ == "bytes":
            return raw.encode()
        if typ == "tuple[str, ...]":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a valid value for {attr}") from None
    return raw.strip().lower() if attr == "serializer" else raw


# --- naq's variable names, read as aliases of ours ------------------------------------------
# naq name -> naq_nb name. When both are set, naq_nb's wins (with a warning).
NAQ_ALIASES: dict[str, str] = {
    "NAQ_DEFAULT_RESULT_TTL": "NAQ_RESULT_TTL",
    "NAQ_JOB_STATUS_TTL": "NAQ_STATUS_TTL",
    "NAQ_DEFAULT_ACK_WAIT": "NAQ_ACK_WAIT",
    "NAQ_WORKER_HEARTBEAT_INTERVAL": "NAQ_HEARTBEAT",
    "NAQ_SCHEDULER_LOCK_TTL": "NAQ_SCHEDULER_LEASE",
}


# naq's variables with no counterpart here, and why; setting one warns instead of being ignored silently.
NAQ_UNSUPPORTED: dict[str, str] = {
    "NAQ_ACK_WAIT_PER_QUEUE": "all workers of a queue share one consumer with one ack wait (NAQ_ACK_WAIT)",
    "NAQ_SCHEDULER_LOCK_RENEW_INTERVAL": "the lease is renewed every NAQ_SCHEDULER_LEASE / 3 seconds",
    "NAQ_MAX_SCHEDULE_FAILURES": "a firing that fails to publish is retried at the next tick, never given up",
    "NAQ_JSON_ENCODER": "the JSON serializer handles JSON types only", "NAQ_JSON_DECODER": "see NAQ_JSON_ENCODER",
    "NAQ_LOG_TO_FILE_ENABLED": "logs go through Python's logging; configure a handler",
    "NAQ_LOG_FILE_PATH": "logs go through Python's logging; configure a handler",
}


def naq_aliases(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with naq's variable names copied to ours where ours are not set."""
    for name in NAQ_UNSUPPORTED:
        if env.get(name):
            warnings.warn(f"{name} (naq's) has no effect in naq_nb: {NAQ_UNSUPPORTED[name]}", stacklevel=3)
    found = {alias: ours for alias, ours in NAQ_ALIASES.items() if env.get(alias)}
    if not found:
        return env
    out = dict(env)
    for alias, ours in found.items():
        try:
            float(env[alias])  # every alias is a number of seconds; name naq's variable, not ours, when bad
        except ValueError:
            raise ValueError(f"{alias}={env[alias]!r} is not a number of seconds (naq's name for {ours})") from None
        if env.get(ours):
            if env[ours] != env[alias]:
                warnings.warn(f"{alias}={env[alias]!r} and {ours}={env[ours]!r} are both set; using {ours}",
                              stacklevel=3)
        else:
            out[ours] = env[alias]
    return out
