"""Workers as seen through their heartbeats in the workers bucket."""

from __future__ import annotations

import json
import time

from .broker import Broker
from .kvscan import scan_bucket

__all__ = ["list_workers", "encode_heartbeat"]


def encode_heartbeat(rec: dict) -> bytes:
    """A worker's heartbeat record as stored in the workers bucket (compact JSON; ``rec`` is left as it is)."""
    return json.dumps(rec, separators=(",", ":"), default=str).encode()


async def list_workers(broker: Broker) -> list[dict]:
    """Live workers (their last heartbeat), with ``heartbeat_age`` in seconds."""
    out = []
    async for item in scan_bucket(broker, broker.layout.workers_bucket):
        rec = json.loads(item.value)
        rec["heartbeat_age"] = max(0.0, time.time() - rec.get("heartbeat_at", 0))
        out.append(rec)
    return sorted(out, key=lambda r: r.get("id", ""))
