"""Shared CLI bits: the --nats-url option and running one coroutine with a broker."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Awaitable, Callable

from ..core.broker import Broker
from ..core.settings import Settings

__all__ = ["add_url", "with_broker", "print_table"]


def add_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", "-u", default=None, help="NATS URL (default: $NAQ_NATS_URL or nats://127.0.0.1:4222)")


def with_broker(args: argparse.Namespace, fn: Callable[[Broker], Awaitable[Any]]) -> Any:
    async def _run() -> Any:
        b = await Broker.connect(settings=Settings.from_env(nats_url=args.nats_url))
        try:
            return await fn(b)
        finally:
            await b.close()
    return asyncio.run(_run())


def print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
