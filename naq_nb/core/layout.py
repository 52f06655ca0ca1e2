"""The NATS layout: every stream, subject, bucket and consumer name and config.

Nothing else in naq_nb spells a subject or bucket name; it asks a :class:`Layout`.
A layout is derived from a prefix (``NAQ_PREFIX``, default ``naq``) so two
applications can share one server without seeing each other's jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nats.js import api

from .errors import UnknownQueueError

__all__ = ["Layout", "validate_queue_name", "QUEUE_NAME_RE", "purge_api_subject", "pull_api_subject"]

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it can be a queue, else raise :class:`UnknownQueueError`."""
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(name):
        raise UnknownQueueError(
            f"invalid queue name {name!r}: use 1-64 letters, digits, '_' or '-' "
            "(it becomes a NATS subject token)")
    return name


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

    def sweep_key(self, sweep_id: str) -> str:
        """Key in the meta bucket of a sweep's record (its points and job ids)."""
        return f"sweep.{sweep_id}"

    def sweep_part_key(self, sweep_id: str, version: int, part: int) -> str:
        """Key of one part of a sweep's body (large sweeps are split to fit max_payload)."""
        return f"sweep.{sweep_id}.v{version}.{part}"

    def cache_key(self, digest: str) -> str:
        """Key in the meta bucket mapping a call's content hash to the job that ran it."""
        return f"cache.{digest}"

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
            subjects=[f"{self.prefix}.jobs.*"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=120.0,  # idempotent enqueue keys are honoured for 2 minutes
            discard=api.DiscardPolicy.OLD,
        )

    def failed_stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.failed_stream,
            subjects=[f"{self.prefix}.failed.*"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            max_age=30 * 86400.0,
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
            # Jobs parked on unmet dependencies stay unacked; leave room for many.
            max_ack_pending=20000,
            max_waiting=512,
        )

    def buckets(self) -> dict[str, dict]:
        """Bucket name -> create_key_value keyword arguments."""
        return {
            self.status_bucket: dict(history=1, ttl=self.status_ttl),
            self.results_bucket: dict(history=1, ttl=self.result_ttl),
            self.workers_bucket: dict(history=1, ttl=self.worker_ttl),
            self.schedules_bucket: dict(history=1, ttl=None),
            self.leader_bucket: dict(history=1, ttl=self.leader_ttl),
            self.meta_bucket: dict(history=1, ttl=self.status_ttl),
        }


def purge_api_subject(stream: str) -> str:
    """JetStream API subject to purge ``stream`` (the reply carries the purged count)."""
    return f"$JS.API.STREAM.PURGE.{stream}"


def pull_api_subject(stream: str, consumer: str) -> str:
    """JetStream API subject for a pull request on a durable consumer."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
