"""A bucket scan (``nq.jobs()``, ``nq.workers()``, schedules) while records are being written.

The scan's consumer starts at the last message per key and then goes on with what is written
while it runs, so a key updated during the pass comes twice. A listing taken while a sweep ran
had the same job twice, one row still ``queued``. The writes here are made between two fetches of
the pass (the scan's own subscription, wrapped), so they land mid-pass every time.
"""

from __future__ import annotations

import contextlib
import json

from naq_nb.core import kvscan
from naq_nb.core.listing import list_jobs

N = 2500  # more than one fetch (kvscan._BATCH) of records


def _rec(status: str, i: int) -> bytes:
    return json.dumps({"status": status, "queue": "default", "enqueued_at": 1_000_000 + i}).encode()


async def test_a_record_written_during_the_scan_is_listed_once_with_its_last_value(broker, monkeypatch):
    kv = await broker.kv(broker.layout.status_bucket)
    keys = [f"{i:032x}" for i in range(N)]
    for i, k in enumerate(keys):
        await kv.put(k, _rec("queued", i))

    real_pass = kvscan.one_pass
    fetches = []

    @contextlib.asynccontextmanager
    async def pass_with_writes(*args, **kwargs):
        async with real_pass(*args, **kwargs) as (sub, info):
            fetch = sub.fetch

            async def fetch_then_write(*a, **kw):
                msgs = await fetch(*a, **kw)
                if not fetches:  # after the first batch: keys it held change, acknowledged before the next
                    await kv.put(keys[0], _rec("succeeded", 0))
                    await kv.delete(keys[1])
                fetches.append(len(msgs))
                return msgs

            sub.fetch = fetch_then_write
            yield sub, info

    monkeypatch.setattr(kvscan, "one_pass", pass_with_writes)
    rows = await list_jobs(broker, limit=None)

    assert len(fetches) > 1, "the writes were made mid-pass"
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a job listed twice"
    by_id = {r["id"]: r for r in rows}
    assert by_id[keys[0]]["status"] == "succeeded"  # its last value, not the one the pass began with
    assert keys[1] not in by_id  # deleted during the pass
    assert len(rows) == N - 1
