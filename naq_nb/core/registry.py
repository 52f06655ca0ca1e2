"""Workers as seen through their heartbeats in the workers bucket."""

from __future__ import annotations

import json
import time

from .broker import Broker

__all__ = ["list_workers"]


async def list_workers(broker: Broker) -> list[dict]:
    """Live workers (their last heartbeat), with ``heartbeat_age`` in seconds."""
    lay = broker.layout
    kv = await broker.kv(lay.workers_bucket)
    # The stream's subject list, not kv.keys(): nats-py's key watcher can end its initial
    # set early when a heartbeat lands just as it starts, and report no workers at all.
    prefix = lay.kv_subject(lay.workers_bucket, "")
    info = await broker.js.stream_info(lay.kv_stream(lay.workers_bucket), subjects_filter=f"{prefix}>")
    keys = [subject[len(prefix):] for subject in (info.state.subjects or {})]
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
