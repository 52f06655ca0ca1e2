"""Workers as seen through their heartbeats in the workers bucket."""

from __future__ import annotations

import json
import time

from nats.js.errors import NoKeysError

from .broker import Broker

__all__ = ["list_workers"]


async def list_workers(broker: Broker) -> list[dict]:
    """Live workers (their last heartbeat), with ``heartbeat_age`` in seconds."""
    kv = await broker.kv(broker.layout.workers_bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except Exception:
            continue
        if not entry.value:
            continue
        rec = json.loads(entry.value)
        rec["heartbeat_age"] = max(0.0, time.time() - rec.get("heartbeat_at", 0))
        out.append(rec)
    return sorted(out, key=lambda r: r.get("id", ""))
