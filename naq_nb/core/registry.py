"""Workers as seen through their heartbeats in the workers bucket."""

from __future__ import annotations

import json
import time
from typing import NotRequired, TypedDict

from .broker import Broker
from .kvscan import scan_bucket

__all__ = ["WorkerRecord", "list_workers", "encode_heartbeat", "decode_heartbeat"]


class WorkerRecord(TypedDict):
    """A worker's heartbeat in the workers bucket (key = worker id), rewritten every heartbeat interval."""

    id: str
    name: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    state: str  # created | idle | busy | stopping | stopped
    execution: str  # processes | threads
    running: list[str]  # ids of the jobs it runs now
    parked: int  # jobs it holds parked on dependencies
    started_at: float
    heartbeat_at: float
    stats: dict[str, int]  # processed, failed, retried, malformed, ...
    heartbeat_age: NotRequired[float]  # seconds since ``heartbeat_at``: added by :func:`list_workers`


def encode_heartbeat(rec: WorkerRecord) -> bytes:
    """A worker's heartbeat record as stored in the workers bucket (compact JSON; ``rec`` is left as it is)."""
    return json.dumps(rec, separators=(",", ":"), default=str).encode()


def decode_heartbeat(data: bytes | None) -> WorkerRecord | None:
    """A heartbeat record with ``heartbeat_age`` added, or None for one that is not a worker's (a
    forged or damaged record names no live worker and must not break a listing)."""
    try:
        rec = json.loads(data or b"")
    except ValueError:
        return None
    beat = rec.get("heartbeat_at") if isinstance(rec, dict) else None
    if not isinstance(beat, (int, float)) or isinstance(beat, bool) or beat != beat:
        return None
    rec["heartbeat_age"] = max(0.0, time.time() - beat)
    return rec


async def list_workers(broker: Broker) -> list[WorkerRecord]:
    """Live workers (their last heartbeat), with ``heartbeat_age`` in seconds; records that are not
    heartbeats are left out."""
    out: list[WorkerRecord] = []
    async for item in scan_bucket(broker, broker.layout.workers_bucket):
        rec = decode_heartbeat(item.value)
        if rec is not None:
            out.append(rec)
    return sorted(out, key=lambda r: str(r.get("id", "")))
