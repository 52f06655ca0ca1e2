#!/usr/bin/env python3
"""Container health check for the compose stack: ``naq-healthcheck worker|scheduler``.

worker: a heartbeat from this container (its host name) is in the workers bucket,
so the worker is connected and serving. scheduler: some scheduler holds the
leader lease, so schedules fire. Exit 0 when healthy, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from naq_nb.core.broker import Broker
from naq_nb.core.registry import list_workers


async def healthy(role: str) -> bool:
    broker = await Broker.connect()  # NAQ_NATS_URL and the other NAQ_* settings of the container
    try:
        if role == "worker":
            host = socket.gethostname()
            return any(w.get("host") == host for w in await list_workers(broker))
        kv = await broker.kv(broker.layout.leader_bucket)
        keys = await kv.keys()
        return broker.layout.leader_key in keys
    except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`'s health log
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return False
    finally:
        await broker.close()


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else "worker"
    if role not in ("worker", "scheduler"):
        print("usage: naq-healthcheck worker|scheduler")
        return 2
    return 0 if asyncio.run(healthy(role)) else 1


if __name__ == "__main__":
    sys.exit(main())
