"""The NATS layout: every stream, subject, bucket and consumer name and config.

Nothing else in naq_nb spells a subject or bucket name; it asks a :class:`Layout`.
A layout is derived from a prefix (``NAQ_PREFIX``, default ``naq``) so two
applications can share one server without seeing each other's jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nats.js import api
from nats.js.object_store import OBJ_STREAM_TEMPLATE

from .errors import ConfigurationError, UnknownQueueError

__all__ = [
    "Layout",
    "validate_queue_name",
    "QUEUE_NAME_RE",
    "JOB_ID_RE",
    "WIRE_ID_RE",
    "validate_job_id",
    "purge_api_subject",
    "pull_api_subject",
    "msg_delete_api_subject",
    "direct_get_api_subject",
    "DIRECT_GET_MAX_SUBJECTS",
    "EXPECTED_LAST_SUBJECT_SEQ",
    "create_only",
    "EARLY_MARK",
]

#: The end of a client's result inbox token when the client takes early pushes
#: (:meth:`Layout.early_subject`). A worker pushes early only to such a token: an older client
#: listens on ``<token>.*`` alone, so an early push and its acknowledgements would never reach
#: it, and each of its reads would wait for a push until its fallback read.
EARLY_MARK = "-e"

#: Header of a publish that JetStream stores only if the subject's last message has this sequence.
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


def create_only() -> dict[str, str]:
    """Headers of a write that only creates its key (a fresh dict: nats-py may keep it)."""
    return {EXPECTED_LAST_SUBJECT_SEQ: "0"}


# \Z, not $: "$" also matches before a trailing newline, and "q\n" is no subject token.
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
# Ids on the wire: a schedule's occurrence id is its (<=128) id plus "-<due ms>".
WIRE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,160}\Z")


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it can be a queue, else raise :class:`UnknownQueueError`."""
    if not isinstance(name, str) or not QUEUE_NAME_RE.fullmatch(name):
        raise UnknownQueueError(
            f"invalid queue name {name!r}: use 1-64 letters, digits, '_' or '-' (it becomes a NATS subject token)"
        )
    return name


def validate_job_id(job_id: object, what: str = "job_id") -> str:
    """Return ``job_id`` if it can be a job id (on the wire, so a schedule's occurrence ids too),
    else raise :class:`~naq_nb.core.errors.ConfigurationError` (a ValueError) naming ``what``."""
    if not isinstance(job_id, str) or not WIRE_ID_RE.fullmatch(job_id):
        raise ConfigurationError(f"invalid {what} {job_id!r}: use 1-160 letters, digits, '_' or '-'")
    return job_id


@dataclass(frozen=True)
class Layout:
    prefix: str = "naq"
    replicas: int = 1
    result_ttl: float = 86400.0
    status_ttl: float = 604800.0
    worker_ttl: float = 30.0
    ack_wait: float = 30.0
    leader_ttl: float = 8.0

    # --- streams -------------------------------------------------------
    @property
    def jobs_stream(self) -> str:
        return f"{self.prefix.upper()}_JOBS"

    @property
    def failed_stream(self) -> str:
        return f"{self.prefix.upper()}_FAILED"

    @property
    def waiting_stream(self) -> str:
        """Jobs parked on unfinished dependencies, apart from their queues."""
        return f"{self.prefix.upper()}_WAITING"

    def waiting_subject(self, dep_id: str) -> str:
        """Where jobs awaiting ``dep_id`` are parked (``"*"`` for all of them)."""
        return f"{self.prefix}.waiting.{dep_id}"

    @property
    def all_queues_subject(self) -> str:
        """The jobs of every queue (the jobs stream's subject)."""
        return f"{self.prefix}.jobs.*"

    @property
    def all_failed_subject(self) -> str:
        """The failed jobs of every queue (the failed stream's subject)."""
        return f"{self.prefix}.failed.*"

    def queue_subject(self, queue: str) -> str:
        return f"{self.prefix}.jobs.{validate_queue_name(queue)}"

    def failed_subject(self, queue: str) -> str:
        return f"{self.prefix}.failed.{validate_queue_name(queue)}"

    def queue_of_subject(self, subject: str) -> str:
        return subject.rsplit(".", 1)[-1]

    @property
    def cancel_subject(self) -> str:
        """Core-NATS subject on which cancel requests for running jobs are announced."""
        return f"{self.prefix}.ctl.cancel"

    def reply_subject(self, token: str, job_id: str) -> str:
        """Core-NATS subject on which a worker pushes a stored result to the client that enqueued the
        job (``token`` names that client's inbox; nothing stores these messages)."""
        return f"{self.prefix}.reply.{token}.{job_id}"

    def reply_inbox(self, token: str) -> str:
        """What a client subscribes to for the results of its jobs: the stored results
        (:meth:`reply_subject`), the early ones and the acknowledgements that prove them
        stored (:meth:`early_subject`, :meth:`early_ack_head`)."""
        return f"{self.prefix}.reply.{token}.>"

    def early_subject(self, token: str, job_id: str, acks_id: str, run: str) -> str:
        """Core-NATS subject of a result pushed while its writes are in flight: the client keeps it
        until the acknowledgements of both writes (the status's ``s``, the result's ``r``) of the
        same run (``run``, a nonce per commit, by the writer ``acks_id``) come to it too, and only
        then hands it out."""
        return f"{self.prefix}.reply.{token}.{job_id}.v{run}.{acks_id}"

    def early_ack_head(self, token: str, job_id: str, kind: str, acks_id: str, run: str) -> str:
        """Reply subject, less its last token, of a result write (``kind`` ``r``) or a status
        write (``s``) of the commit ``run`` whose acknowledgement goes both to the writer's
        connection (``acks_id``, :meth:`early_ack_pattern`) and to the client of ``token``: one
        message, no relay."""
        return f"{self.prefix}.reply.{token}.{job_id}.{kind}{run}.{acks_id}"

    def reply_parts(self, subject: str) -> tuple[str, str, str] | None:
        """``(job id, kind, run)`` of a subject under :meth:`reply_inbox`: kind ``""`` a stored
        result (run ``""``), ``"v"`` an early one, ``"s"``/``"r"`` a copied acknowledgement, and
        run what names one commit of one writer; None if it is none of these."""
        parts = subject.split(".")
        i = self.prefix.count(".") + 3
        tail = parts[i + 1 :]
        if len(parts) <= i:
            return None
        if not tail:
            return parts[i], "", ""
        kind, run = tail[0][:1], tail[0][1:]
        if run and ((len(tail) == 2 and kind == "v") or (len(tail) == 3 and kind in ("s", "r"))):
            return parts[i], kind, f"{tail[1]}.{run}"
        return None

    def early_ack_pattern(self, acks_id: str) -> str:
        """What a writer of early-acknowledged writes subscribes to (``acks_id`` names it)."""
        return f"{self.prefix}.reply.*.*.*.{acks_id}.*"

    def consumer_name(self, queue: str) -> str:
        return f"{self.prefix}_q_{validate_queue_name(queue)}"

    # --- KV buckets -----------------------------------------------------
    @property
    def status_bucket(self) -> str:
        return f"{self.prefix}_status"

    @property
    def results_bucket(self) -> str:
        return f"{self.prefix}_results"

    @property
    def workers_bucket(self) -> str:
        return f"{self.prefix}_workers"

    @property
    def schedules_bucket(self) -> str:
        return f"{self.prefix}_schedules"

    @property
    def leader_bucket(self) -> str:
        return f"{self.prefix}_leader"

    @property
    def meta_bucket(self) -> str:
        """Sweeps, sweep caches and other client-side records."""
        return f"{self.prefix}_meta"

    @property
    def objects_bucket(self) -> str:
        """Object store of job bodies over max_payload and ``nq.put`` values (TTL ``status_ttl``)."""
        return f"{self.prefix}_objects"

    @property
    def result_objects_bucket(self) -> str:
        """Object store of results over max_payload (TTL ``result_ttl``, like the results bucket)."""
        return f"{self.prefix}_result_objects"

    def object_buckets(self) -> dict[str, float]:
        """Object store bucket name -> TTL in seconds (created on first use, not by ensure_layout)."""
        return {self.objects_bucket: self.status_ttl, self.result_objects_bucket: self.result_ttl}

    def object_record_buckets(self) -> dict[str, str]:
        """Object store bucket name -> the KV bucket whose records its objects belong to (and live as long as)."""
        return {self.objects_bucket: self.status_bucket, self.result_objects_bucket: self.results_bucket}

    def sweep_key(self, sweep_id: str) -> str:
        """Key in the meta bucket of a sweep's record (its points and job ids)."""
        return f"sweep.{sweep_id}"

    def sweep_part_key(self, sweep_id: str, version: int, part: int) -> str:
        """Key of one part of a sweep's body (large sweeps are split to fit max_payload)."""
        return f"sweep.{sweep_id}.v{version}.{part}"

    def cache_key(self, digest: str) -> str:
        """Key in the meta bucket mapping a call's content hash to the job that ran it."""
        return f"cache.{digest}"

    def cache_shard_key(self, fn_digest: str, shard: str) -> str:
        """Key of one shard of a sweep function's result cache (point digest -> job id, JSON)."""
        return f"cache.{fn_digest}.{shard}"

    def claim_key(self, job_id: str) -> str:
        """Key in the meta bucket claiming a chosen job id (or key) for one call: ``{"digest", "fn"}``."""
        return f"job.{job_id}"

    def schedule_key(self, schedule_id: str) -> str:
        """Key in the schedules bucket of one schedule (delayed job, cron or interval)."""
        return f"s.{schedule_id}"

    @property
    def leader_key(self) -> str:
        return "scheduler"

    def kv_stream(self, bucket: str) -> str:
        """The stream behind a KV bucket (its config holds the bucket's TTL)."""
        return f"KV_{bucket}"

    def kv_subject(self, bucket: str, key: str) -> str:
        """The subject a put on ``bucket``/``key`` is published on (push waits use it)."""
        return f"$KV.{bucket}.{key}"

    # --- configs --------------------------------------------------------
    def jobs_stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.jobs_stream,
            subjects=[self.all_queues_subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=120.0,  # idempotent enqueue keys are honoured for 2 minutes
            discard=api.DiscardPolicy.OLD,
        )

    def failed_stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.failed_stream,
            subjects=[self.all_failed_subject],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            max_age=30 * 86400.0,
        )

    def waiting_stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.waiting_stream,
            subjects=[self.waiting_subject("*")],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            max_age=self.status_ttl,  # a dependent outlives its dependency's status record by no more
            # A repeated park of the same job on the same dependency is dropped (never past max_age).
            duplicate_window=min(120.0, self.status_ttl),
        )

    def consumer_config(self, queue: str) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.consumer_name(queue),
            filter_subject=self.queue_subject(queue),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # Retries are decided by the worker from the job's own policy.
            max_deliver=-1,
            # Parked dependents are acked and kept apart (the waiting stream); this bounds
            # running + buffered jobs of all workers of the queue.
            max_ack_pending=20000,
            max_waiting=512,
        )

    def fast_batch_streams(self) -> list[str]:
        """Streams ``enqueue_many`` publishes to in fast-ingest batches (``allow_batched``, 2.14+)."""
        return [self.jobs_stream, self.kv_stream(self.status_bucket)]

    def buckets(self) -> dict[str, dict]:
        """Bucket name -> create_key_value keyword arguments."""
        # Direct gets (no JSON/base64 envelope; many keys in one request, server 2.11+) only with one
        # replica: that replica is the one that acknowledged every write, so a direct get never reads
        # behind it, as a follower could.
        ttls: dict[str, float | None] = {b: getattr(self, f) for b, f in self._bucket_ttl_fields().items()}
        ttls[self.schedules_bucket] = None
        return {name: dict(history=1, ttl=ttl, direct=self.replicas == 1) for name, ttl in ttls.items()}

    def _bucket_ttl_fields(self) -> dict[str, str]:
        return {
            self.status_bucket: "status_ttl",
            self.results_bucket: "result_ttl",
            self.workers_bucket: "worker_ttl",
            self.leader_bucket: "leader_ttl",
            self.meta_bucket: "status_ttl",
        }

    def age_limits(self) -> dict[str, tuple[str, float]]:
        """Stream -> (the field of these settings that sets its age limit, its seconds): the buckets with a
        TTL and the waiting stream. The object stores follow their record buckets (blobs.py)."""
        limits = {self.kv_stream(b): (f, getattr(self, f)) for b, f in self._bucket_ttl_fields().items()}
        limits[self.waiting_stream] = ("status_ttl", self.status_ttl)
        return limits

    def stream_names(self) -> list[str]:
        """Every stream of the layout: the job streams, the buckets' and the object stores'."""
        kv = [self.kv_stream(b) for b in self.buckets()]
        objects = [OBJ_STREAM_TEMPLATE.format(bucket=b) for b in self.object_buckets()]
        return [self.jobs_stream, self.failed_stream, self.waiting_stream, *kv, *objects]


def purge_api_subject(stream: str) -> str:
    """JetStream API subject to purge ``stream`` (the reply carries the purged count)."""
    return f"$JS.API.STREAM.PURGE.{stream}"


def direct_get_api_subject(stream: str) -> str:
    """JetStream API subject of direct gets on ``stream`` (a KV bucket's, with direct gets allowed)."""
    return f"$JS.API.DIRECT.GET.{stream}"


#: Consumers an object store's stream may have (nats-server 2.15 allows 1,000 unless a stream says):
#: every download makes one (an ordered consumer, :mod:`.download`), which the server keeps for seconds after.
OBJECT_STORE_MAX_CONSUMERS = 100_000


def consumer_delete_api_subject(stream: str, consumer: str) -> str:
    """JetStream API subject that deletes ``consumer`` of ``stream``."""
    return f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}"


#: Subjects one batched direct get may name (``multi_last``): the server answers 413 above it.
DIRECT_GET_MAX_SUBJECTS = 1024


def pull_api_subject(stream: str, consumer: str) -> str:
    """JetStream API subject for a pull request on a durable consumer."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def msg_delete_api_subject(stream: str) -> str:
    """JetStream API subject to delete one message of ``stream`` (``{"seq": n, "no_erase": true}``)."""
    return f"$JS.API.STREAM.MSG.DELETE.{stream}"
