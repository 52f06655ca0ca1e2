"""Settings read from ``NAQ_*`` environment variables.

The environment is read when :func:`Settings.from_env` is called, never at import
time, so a notebook can set ``os.environ`` and then connect.
"""

from __future__ import annotations

import functools
import math
import os
import re
import urllib.parse
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import ConfigurationError

__all__ = ["Settings", "ENV_VARS", "redact_url", "redact_options"]

# name -> (attribute, default, description); the README's configuration table mirrors this.
ENV_VARS: dict[str, tuple[str, str, str]] = {
    "NAQ_NATS_URL": ("nats_url", "nats://127.0.0.1:4222", "NATS server URL(s), comma separated"),
    "NAQ_DEFAULT_QUEUE": ("default_queue", "default", "queue used when none is named"),
    "NAQ_JOB_SERIALIZER": ("serializer", "pickle", "`pickle` (cloudpickle) or `json`"),
    "NAQ_JSON_ALLOWED": (
        "json_allowed",
        "",
        "comma-separated `module:function` or `module` entries a JSON-mode "
        "worker may call; empty = functions of your own modules (not stdlib, site-packages, naq_nb)",
    ),
    "NAQ_SIGNING_KEY": (
        "signing_key",
        "",
        "shared secret; when set, jobs and results are HMAC-signed and unsigned ones are refused before unpickling",
    ),
    "NAQ_SIGNING_KEYS": (
        "accepted_keys",
        "",
        "comma-separated keys for rotation: the first signs (unless NAQ_SIGNING_KEY is set), all are accepted",
    ),
    "NAQ_RESULT_TTL": ("result_ttl", "86400", "seconds results are kept (bucket TTL)"),
    "NAQ_STATUS_TTL": (
        "status_ttl",
        "604800",
        "seconds job status records (and `job_id`/`key` claims) are kept; at least `NAQ_RESULT_TTL`",
    ),
    "NAQ_ACK_WAIT": ("ack_wait", "30", "seconds before an unacknowledged job is redelivered"),
    "NAQ_HEARTBEAT": ("heartbeat_interval", "5", "seconds between worker heartbeats"),
    "NAQ_WORKER_TTL": ("worker_ttl", "30", "seconds a worker record lives without a heartbeat"),
    "NAQ_SCHEDULER_LEASE": (
        "leader_ttl",
        "8",
        "seconds a scheduler's leadership lease lives without renewal (failover time)",
    ),
    "NAQ_CONNECT_TIMEOUT": ("connect_timeout", "5", "seconds before a connection attempt gives up"),
    "NAQ_PUBLISH_TIMEOUT": (
        "publish_timeout",
        "10",
        "seconds a publish (enqueue, result write) waits for JetStream's acknowledgement before it fails",
    ),
    "NAQ_PING_INTERVAL": (
        "ping_interval",
        "5",
        "seconds between pings on each connection; two unanswered make it reconnect (a frozen server or "
        "a half-open link is left within three intervals)",
    ),
    "NAQ_REPLICAS": ("replicas", "1", "stream and bucket replicas (3 on a cluster)"),
    "NAQ_PREFIX": ("prefix", "naq", "prefix of every subject, stream and bucket name"),
    "NAQ_NATS_SERVER_BIN": ("server_bin", "", "path of the nats-server binary for the embedded server"),
    "NAQ_NATS_CREDS": ("creds", "", "NATS credentials file (JWT + NKey seed), like `--creds`"),
    "NAQ_TLS_CA": ("tls_ca", "", "CA certificate file to verify the server's TLS certificate, like `--tls-ca`"),
    "NAQ_TLS_CERT": ("tls_cert", "", "client TLS certificate file (with `NAQ_TLS_KEY`), like `--tls-cert`"),
    "NAQ_TLS_KEY": ("tls_key", "", "client TLS private key file, like `--tls-key`"),
}


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`, adjust with :meth:`with_`."""

    nats_url: str = "nats://127.0.0.1:4222"
    default_queue: str = "default"
    serializer: str = "pickle"
    json_allowed: tuple[str, ...] = ()
    signing_key: bytes = b""
    accepted_keys: tuple[bytes, ...] = ()
    result_ttl: float = 86400.0
    status_ttl: float = 604800.0
    ack_wait: float = 30.0
    heartbeat_interval: float = 5.0
    worker_ttl: float = 30.0
    leader_ttl: float = 8.0
    connect_timeout: float = 5.0
    publish_timeout: float = 10.0
    ping_interval: float = 5.0
    replicas: int = 1
    prefix: str = "naq"
    server_bin: str = ""
    creds: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    nats_options: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """The ``NAQ_*`` variables of ``environ`` (default ``os.environ``), read now, then ``overrides``
        (None values skipped). A bad value raises ``ValueError`` naming its variable."""
        given = os.environ if environ is None else environ
        env = naq_aliases(given)
        values: dict[str, Any] = {}  # each converted to its field's type by _convert
        types = {f.name: f.type for f in fields(cls)}
        for var, (attr, _default, _doc) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[attr] = _convert(var, attr, raw, types[attr])
        try:
            settings = cls(**values)
        except ValueError as exc:  # it names our variables: say which were set under naq's names
            raise ValueError(f"{exc}{_alias_note(str(exc), given)}") from None
        return settings.with_(**{k: v for k, v in overrides.items() if v is not None})

    def with_(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (field names), checked again; an unknown name raises ``TypeError``."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def __post_init__(self) -> None:
        if isinstance(self.signing_key, str):
            object.__setattr__(self, "signing_key", self.signing_key.encode())
        if isinstance(self.accepted_keys, (str, bytes)):
            raise TypeError("accepted_keys must be a tuple of keys (NAQ_SIGNING_KEYS is comma-separated)")
        object.__setattr__(
            self, "accepted_keys", tuple(k.encode() if isinstance(k, str) else k for k in self.accepted_keys)
        )
        _validate(self)
        if not self.signing_key and self.accepted_keys:
            object.__setattr__(self, "signing_key", self.accepted_keys[0])

    def connect_options(self) -> dict:
        """nats-py connect options from the settings: ``nats_options`` plus creds, TLS files and pings."""
        opts = dict(self.nats_options)
        opts.update(self.ping_options(opts))
        if self.creds:
            opts.setdefault("user_credentials", self.creds)
        if self.tls_ca or self.tls_cert:
            import ssl

            try:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca or None)
            except ssl.SSLError as exc:
                raise ConfigurationError(
                    f"tls_ca (NAQ_TLS_CA) {self.tls_ca!r} holds no usable CA certificate: {exc}"
                ) from None
            if self.tls_cert:
                try:
                    ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
                except ssl.SSLError as exc:
                    raise ConfigurationError(
                        f"tls_cert / tls_key (NAQ_TLS_CERT / NAQ_TLS_KEY) {self.tls_cert!r} "
                        f"{'/ ' + repr(self.tls_key) + ' ' if self.tls_key else ''}are not a usable certificate "
                        f"and key: {exc}"
                    ) from None
            opts.setdefault("tls", ctx)
        return opts

    def ping_options(self, given: Mapping[str, object] = {}) -> dict:  # noqa: B006 (read only)
        """``ping_interval`` and ``max_outstanding_pings`` unless ``given`` has them. nats-py's own
        default pings every 2 minutes, so a connection to a frozen server (or a link that died without
        a FIN) looked alive for 4-6 minutes while its worker took no job."""
        opts: dict = {"ping_interval": self.ping_interval, "max_outstanding_pings": 2}
        return {k: v for k, v in opts.items() if k not in given}

    @property
    def servers(self) -> list[str]:
        """``nats_url``'s server URLs (it may list several, comma separated)."""
        return server_list(self.nats_url)

    @functools.cached_property  # read for every record checked; settings are frozen
    def signing_keys(self) -> tuple[bytes, ...]:
        """Every accepted signing key, the one that signs first (empty: signing is off)."""
        return tuple(dict.fromkeys(k for k in (self.signing_key, *self.accepted_keys) if k))

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("signing_key", "accepted_keys"):
                v = "***" if v else v
            elif f.name == "nats_url":
                v = redact_url(v)
            elif f.name == "nats_options":
                v = redact_options(v)
            shown.append(f"{f.name}={v!r}")
        return f"Settings({', '.join(shown)})"


_SECRET_OPTIONS = ("password", "token", "nkeys_seed", "nkeys_seed_str", "user_jwt_cb", "signature_cb", "pass")


def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list) with any ``user:password@`` / ``token@`` part replaced by ``***``."""
    out = []
    for u in str(url).split(","):
        scheme, sep, rest = u.strip().partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            u = f"{scheme}://***@{rest.split('@', 1)[1]}"
        out.append(u)
    return ",".join(out)


def redact_options(options: Mapping[str, object]) -> dict:
    """nats-py connect options with secrets (passwords, tokens, seeds) shown as ``***``."""
    return {
        k: (
            "***"
            if any(s in k.lower() for s in _SECRET_OPTIONS) and v
            else redact_url(v)
            if k == "servers" and isinstance(v, str)
            else v
        )
        for k, v in dict(options).items()
    }


_POSITIVE = {
    "result_ttl": "NAQ_RESULT_TTL",
    "status_ttl": "NAQ_STATUS_TTL",
    "ack_wait": "NAQ_ACK_WAIT",
    "heartbeat_interval": "NAQ_HEARTBEAT",
    "worker_ttl": "NAQ_WORKER_TTL",
    "leader_ttl": "NAQ_SCHEDULER_LEASE",
    "connect_timeout": "NAQ_CONNECT_TIMEOUT",
    "publish_timeout": "NAQ_PUBLISH_TIMEOUT",
    "ping_interval": "NAQ_PING_INTERVAL",
}
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MOST_SECONDS = 10 * 365 * 86400  # the longest TTL or timeout taken (the server keeps them as int64 nanoseconds)
_BUCKET_TTLS = ("result_ttl", "status_ttl", "worker_ttl", "leader_ttl")  # the server's shortest max age: 0.1 s
_URL_SCHEMES = ("nats", "tls", "ws", "wss")


def _validate(s: "Settings") -> None:
    """Refuse values that would make a service spin, hang or build invalid NATS names."""
    for attr, var in _POSITIVE.items():
        v = getattr(s, attr)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{attr} ({var}) must be a number of seconds, not {v!r}")
        least = 0.05 if attr == "heartbeat_interval" else 0.1 if attr in _BUCKET_TTLS else 0.0
        if not math.isfinite(v) or v <= 0 or v < least or v > _MOST_SECONDS:
            raise ValueError(
                f"{attr} ({var}) must be a number of seconds > 0"
                f"{f' (at least {least:g})' if least else ''} and at most {_MOST_SECONDS:,} (10 years), not {v!r}"
            )
    if s.heartbeat_interval >= s.worker_ttl:
        raise ValueError(
            f"heartbeat_interval (NAQ_HEARTBEAT, {s.heartbeat_interval:g}) must be below worker_ttl "
            f"(NAQ_WORKER_TTL, {s.worker_ttl:g}), or a live worker's record expires between heartbeats"
        )
    if s.status_ttl < s.result_ttl:
        raise ValueError(
            f"status_ttl (NAQ_STATUS_TTL, {_shown(s.status_ttl)}) must not be shorter than result_ttl "
            f"(NAQ_RESULT_TTL, {_shown(s.result_ttl)}): a job's status record and its job_id/key claim would "
            "expire while its result is still stored, so a dependent enqueued then fails as if the job "
            "never existed, and the id reused by another call hands back the old result; raise "
            "NAQ_STATUS_TTL or lower NAQ_RESULT_TTL"
        )
    if isinstance(s.replicas, bool) or not isinstance(s.replicas, int) or not 1 <= s.replicas <= 5:
        raise ValueError(f"replicas (NAQ_REPLICAS) must be an int from 1 to 5, not {s.replicas!r}")
    if s.serializer not in ("pickle", "json"):
        raise ValueError(f"NAQ_JOB_SERIALIZER must be 'pickle' or 'json', not {s.serializer!r}")
    if not isinstance(s.prefix, str) or not _PREFIX_RE.fullmatch(s.prefix):
        raise ValueError(f"prefix (NAQ_PREFIX) must be 1-32 letters, digits, '_' or '-', not {s.prefix!r}")
    if s.prefix.endswith("_result"):  # (Layout.result_objects_bucket is "<prefix>_result_objects")
        raise ValueError(
            f"prefix (NAQ_PREFIX) {s.prefix!r} must not end in '_result': its object store would be "
            f"the result object store of prefix {s.prefix[:-7]!r} on the same server"
        )
    if not isinstance(s.default_queue, str) or not _QUEUE_RE.fullmatch(s.default_queue):
        raise ValueError(
            f"default_queue (NAQ_DEFAULT_QUEUE) must be 1-64 letters, digits, '_' or '-', not {s.default_queue!r}"
        )
    _check_urls(s.nats_url)
    for attr, var in (
        ("creds", "NAQ_NATS_CREDS"),
        ("tls_ca", "NAQ_TLS_CA"),
        ("tls_cert", "NAQ_TLS_CERT"),
        ("tls_key", "NAQ_TLS_KEY"),
    ):
        path = getattr(s, attr)
        if path and not os.path.isfile(path):
            raise ValueError(f"{attr} ({var}): no such file: {path!r}")
    if s.tls_key and not s.tls_cert:
        raise ValueError("tls_key (NAQ_TLS_KEY) needs tls_cert (NAQ_TLS_CERT) too")
    if not isinstance(s.signing_key, bytes) or not all(isinstance(k, bytes) for k in s.accepted_keys):
        raise TypeError("signing_key and accepted_keys must be bytes (or str)")


_QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _shown(seconds: float) -> str:
    """Seconds as a user writes them: ``2592000``, not ``2.592e+06``; ``0.5`` stays ``0.5``."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def server_list(url: str) -> list[str]:
    """The server URLs of a comma-separated ``nats_url``, blanks dropped (as nats-py's ``servers``)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def _check_urls(url: Any) -> None:
    """One or more server URLs, comma separated: ``nats://host:port``, ``tls://``, ``ws(s)://`` or
    ``host:port``; an empty entry list (``","``) would leave the client no server to try, for ever."""
    entries = server_list(url) if isinstance(url, str) else []
    if not entries:
        raise ValueError(f"nats_url (NAQ_NATS_URL) must be a non-empty URL, not {redact_url(str(url))!r}")
    for u in entries:
        scheme = u.partition("://")[0] if "://" in u else "nats"
        if scheme.lower() not in _URL_SCHEMES:
            raise ValueError(
                f"nats_url (NAQ_NATS_URL) {redact_url(u)!r}: the scheme must be one of "
                f"{', '.join(s + '://' for s in _URL_SCHEMES)}, not {scheme + '://'!r}"
            )
        parts = urllib.parse.urlsplit(u if "://" in u else f"nats://{u}")
        try:
            port = parts.port  # (raises for a port out of range)
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:  # 0 too: nothing listens there, it only waits
            raise ValueError(f"nats_url (NAQ_NATS_URL) {redact_url(u)!r}: the port must be 1-65535")
        if not parts.hostname or any(c.isspace() for c in u):
            raise ValueError(
                f"nats_url (NAQ_NATS_URL) {redact_url(u)!r}: not a server address (nats://host:port, or host:port)"
            )


def _convert(var: str, attr: str, raw: str, typ: object) -> object:
    if typ in ("tuple[bytes, ...]", "tuple[str, ...]"):
        parts = tuple(p.strip() for p in raw.split(",") if p.strip())
        if raw.strip() and not parts:  # a value was meant, and none would silently be used
            raise ValueError(f"{var} holds no value between its commas: give one or more, or leave it unset")
        return tuple(p.encode() for p in parts) if typ == "tuple[bytes, ...]" else parts
    try:
        if typ == "float":
            return float(raw)
        if typ == "int":
            return int(raw)
    except ValueError:
        shown = "***" if "KEY" in var else repr(raw)
        raise ValueError(f"{var}={shown} is not a valid value for {attr}") from None
    if typ == "bytes":
        return raw.encode()
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
    "NAQ_JSON_ENCODER": "the JSON serializer handles JSON types only",
    "NAQ_JSON_DECODER": "see NAQ_JSON_ENCODER",
    "NAQ_LOG_TO_FILE_ENABLED": "logs go through Python's logging; configure a handler",
    "NAQ_LOG_FILE_PATH": "logs go through Python's logging; configure a handler",
}


# The variables that make ``Settings.from_env()`` in a job process reach its worker's server.
_CONNECTION_VARS = {
    "NAQ_NATS_URL": "nats_url",
    "NAQ_PREFIX": "prefix",
    "NAQ_NATS_CREDS": "creds",
    "NAQ_TLS_CA": "tls_ca",
    "NAQ_TLS_CERT": "tls_cert",
    "NAQ_TLS_KEY": "tls_key",
}


def connection_env(s: Settings) -> dict[str, str]:
    """``NAQ_*`` variables naming the server, prefix and connection files of ``s`` (those set): a
    job process started with them enqueues (``enqueue_sync``, ``nq.submit``) to its worker's server."""
    return {var: str(getattr(s, attr)) for var, attr in _CONNECTION_VARS.items() if getattr(s, attr)}


def _alias_note(message: str, env: Mapping[str, str]) -> str:
    """For an error naming our variables: which of them ``env`` set under naq's name instead."""
    used = [
        f"{alias} is naq's name for {ours}"
        for alias, ours in NAQ_ALIASES.items()
        if env.get(alias) and not env.get(ours) and ours in message
    ]
    return f" ({'; '.join(used)})" if used else ""


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
                warnings.warn(
                    f"{alias}={env[alias]!r} and {ours}={env[ours]!r} are both set; using {ours}", stacklevel=3
                )
        else:
            out[ours] = env[alias]
    return out
